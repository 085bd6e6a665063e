from llm4pr.cli import main

raise SystemExit(main())
