import sys

from qwen_sglang.cli import main

sys.exit(main())
