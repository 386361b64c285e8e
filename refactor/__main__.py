"""python -m refactor: not implemented yet (issue #4)."""

import sys

if __name__ == "__main__":
    print("refactor: not implemented yet; tracked in issue #4 (RefactorNet action / co-occurrence feature refactoring)", file=sys.stderr)
    sys.exit(2)
