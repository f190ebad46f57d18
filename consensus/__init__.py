"""The protocol as pure code: types, codec, crypto, ledger transition, work rules, Tendermint.

Nothing in this package performs I/O, reads a clock, awaits, or imports
torch; it imports only the standard library, msgpack, pynacl and itself.
"""
