from edgescale.cli.common import main

main()
