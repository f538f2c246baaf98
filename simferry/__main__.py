from simferry.cli import main

raise SystemExit(main())
