"""The operators' side: the Telegram forum group, its topics, commands and buttons.

Imports the core, the customers' channels and ops; never the web server.
"""
