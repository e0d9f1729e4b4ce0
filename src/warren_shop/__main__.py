from warren_shop.cli import main

main()
