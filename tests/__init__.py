"""The test suite, a package so that shared helpers import by their package path.

pytest's default ``prepend`` import mode puts the folder above the topmost
package (the repository root) first on ``sys.path`` and imports each test
module under its dotted name (``tests.pruning.test_post_cut``); helpers are
imported the same way (``from tests.pruning.pruning_helpers import ...``), from
any folder and in child processes started from the repository root.
"""
