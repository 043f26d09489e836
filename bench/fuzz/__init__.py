"""The protocol fuzzer: an oracle of valid calls, a seeded generator of odd ones, a runner."""
