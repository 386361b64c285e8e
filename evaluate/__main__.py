"""python -m evaluate: not implemented yet (issue #6)."""

import sys

if __name__ == "__main__":
    print("evaluate: not implemented yet; tracked in issue #6 (mAP at tIoU thresholds and AR@AN, identical to the ActivityNet evaluator)", file=sys.stderr)
    sys.exit(2)
