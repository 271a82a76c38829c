"""Built-in attacks; importing this package registers them."""
