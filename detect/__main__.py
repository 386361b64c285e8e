"""python -m detect: not implemented yet (issue #5)."""

import sys

if __name__ == "__main__":
    print("detect: not implemented yet; tracked in issue #5 (the BSN-style detector (boundary proposals, RoI heads, Soft-NMS))", file=sys.stderr)
    sys.exit(2)
