/* SPDX-License-Identifier: Apache-2.0 */
/* `meshlite lab`: a multi-node cluster out of network namespaces on one machine. */
#ifndef CLI_LAB_H
#define CLI_LAB_H

/* argv[0] is "lab"; returns the process exit status (CLI_EXIT_*). */
int cli_lab_main(int argc, char **argv);

#endif
