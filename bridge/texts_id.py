"""The Indonesian catalog: every English text the bot says, in Bahasa Indonesia.

Keys are the English literals exactly as written in the code (`_("...")`, `N_("...")`);
`tests/test_texts.py` checks that each one is here, that nothing here is unused, and that
placeholders and HTML tags match. Polite, plain Indonesian as a support team writes it.
"""

from __future__ import annotations

INDONESIAN: dict[str, str] = {
    # --- dates (texts.py) ---
    "Mon": "Sen",
    "Tue": "Sel",
    "Wed": "Rab",
    "Thu": "Kam",
    "Fri": "Jum",
    "Sat": "Sab",
    "Sun": "Min",
    "Jan": "Jan",
    "Feb": "Feb",
    "Mar": "Mar",
    "Apr": "Apr",
    "May": "Mei",
    "Jun": "Jun",
    "Jul": "Jul",
    "Aug": "Agu",
    "Sep": "Sep",
    "Oct": "Okt",
    "Nov": "Nov",
    "Dec": "Des",
    # --- render.py: the topic header and customer posts ---
    "(empty message)": "(pesan kosong)",
    "WhatsApp customer": "Pelanggan WhatsApp",
    "{who}\nRoom: <code>{room}</code>\nReply window closes: {closes}": (
        "{who}\nRuang obrolan: <code>{room}</code>\nJendela balasan ditutup: {closes}"
    ),
    "(cont. {part}/{parts})": "(lanjutan {part}/{parts})",
    "(part 1/{parts})": "(bagian 1/{parts})",
    # --- reminders.py: the reply window ---
    "⏳ The customer's message is unanswered and the reply window closes at "
    "{when} (in {minutes:.0f} min).": (
        "⏳ Pesan pelanggan belum dibalas dan jendela balasan akan ditutup pada "
        "{when} ({minutes:.0f} menit lagi)."
    ),
    "🔒 The reply window closed at {when}. Replies are refused until the customer writes again.": (
        "🔒 Jendela balasan ditutup pada {when}. "
        "Balasan tidak dapat dikirim sampai pelanggan menulis lagi."
    ),
}
