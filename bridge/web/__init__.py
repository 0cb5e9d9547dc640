"""What listens on HTTP: NusaSMS's callbacks, media links, Telegram's webhook, the admin port."""
