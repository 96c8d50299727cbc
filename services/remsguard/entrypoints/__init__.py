"""Entry points: decode the outside world's input, build a command, hand it on."""
