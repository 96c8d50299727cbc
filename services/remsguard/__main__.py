from remsguard.entrypoints.cli import main

main()
