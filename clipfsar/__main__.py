from clipfsar.cli import main

main()
