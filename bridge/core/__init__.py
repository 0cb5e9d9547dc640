"""What every side shares: configuration, storage, the bot's texts, workers, timing, logs.

Nothing here imports Telegram, aiohttp or another side of the bridge.
"""
