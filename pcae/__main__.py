from pcae.cli import main

main()
