import sys

from llm4sbr.cli import main

sys.exit(main())
