/* SPDX-License-Identifier: Apache-2.0 */
/* Shared main() for Check unit tests: ML_CHECK_MAIN(foo_suite) runs one suite. */
#ifndef ML_CHECK_MAIN_H
#define ML_CHECK_MAIN_H

#include <check.h>
#include <stdlib.h>

#define ML_CHECK_MAIN(suite_fn)                                                                    \
	int main(void)                                                                             \
	{                                                                                          \
		SRunner *sr = srunner_create(suite_fn());                                          \
		srunner_run_all(sr, CK_NORMAL);                                                    \
		int failed = srunner_ntests_failed(sr);                                            \
		srunner_free(sr);                                                                  \
		return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;                                  \
	}

#endif
