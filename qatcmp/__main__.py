from qatcmp.cli import main

raise SystemExit(main())
