"""The customers' side: what arrives from NusaSMS and what is sent back through it.

Imports the core and the NusaSMS library, never the Telegram group's side.
"""
