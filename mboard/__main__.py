from mboard.cli import main

main()
