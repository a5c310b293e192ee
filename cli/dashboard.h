/* SPDX-License-Identifier: Apache-2.0 */
/* `meshlite dashboard NODE`: the URL of a lab node's ztunnel dashboard, or a forwarder to it. */
#ifndef CLI_DASHBOARD_H
#define CLI_DASHBOARD_H

/* argv[0] is "dashboard"; returns the process exit status (CLI_EXIT_*). */
int cli_dashboard_main(int argc, char **argv);

#endif
