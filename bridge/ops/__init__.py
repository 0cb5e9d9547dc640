"""The bridge's own care: health, start-up checks, backups, retention, WAL upkeep.

Imports the core and the NusaSMS library only.
"""
