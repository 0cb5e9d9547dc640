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
    # --- alerts.py: callbacks that cannot be stored ---
    "🛑 Callbacks cannot be stored: the database takes no writes "
    "({error}). NusaSMS is answered 503 and retries; customer "
    "messages arrive once it can be written again. Check the free disk space and "
    "the database file.": (
        "🛑 Callback tidak dapat disimpan: database tidak menerima penulisan ({error}). "
        "NusaSMS mendapat jawaban 503 dan akan mencoba lagi; pesan pelanggan akan masuk "
        "setelah database dapat ditulis kembali. Periksa ruang disk yang tersisa dan berkas "
        "database."
    ),
    "✅ Callbacks are stored again.": "✅ Callback tersimpan kembali.",
    # --- relay.py: a customer message Telegram refused for good ---
    "⚠️ A message from the customer could not be shown here (Telegram said: {reason}).": (
        "⚠️ Sebuah pesan dari pelanggan tidak dapat ditampilkan di sini (kata Telegram: {reason})."
    ),
    "{notice} Its text:\n\n{text}": "{notice} Isi teksnya:\n\n{text}",
    # --- reminders.py: the reply window ---
    "⏳ The customer's message is unanswered and the reply window closes at "
    "{when} (in {minutes:.0f} min).": (
        "⏳ Pesan pelanggan belum dibalas dan jendela balasan akan ditutup pada "
        "{when} ({minutes:.0f} menit lagi)."
    ),
    "🔒 The reply window closed at {when}. Replies are refused until the customer writes again.": (
        "🔒 Jendela balasan sudah ditutup pada {when}. "
        "Balasan tidak dapat dikirim sampai pelanggan menulis lagi."
    ),
    # --- commands.py: command descriptions and answers ---
    "In a customer's topic: number, reply window, message counts": (
        "Di topik pelanggan: nomor, jendela balasan, jumlah pesan"
    ),
    "In a customer's topic: close it (the next customer message reopens it)": (
        "Di topik pelanggan: tutup topik (pesan pelanggan berikutnya membukanya lagi)"
    ),
    "NusaSMS balances and expiry dates": "Saldo NusaSMS dan tanggal kedaluwarsanya",
    "Queues, last callback, last error": "Antrean, callback terakhir, error terakhir",
    "What the bridge does and how to use it": "Apa yang dilakukan bridge dan cara memakainya",
    "<b>WhatsApp bridge</b>\n"
    "Every WhatsApp customer has a topic here. Write in the topic to answer: text, photos, "
    "documents, videos, audio and voice notes reach the customer. Reactions on your message "
    "show what happened: 😴 still waiting, 🕊 accepted, 👌 delivered, 👀 read, 💔 failed.\n"
    "Messages starting with <code>{note}</code> are notes between operators and stay here. "
    "To send text that starts with “/”, put a backslash before it: <code>\\/home</code>. "
    "Edits do not reach WhatsApp. Free-form replies are possible for {hours:g} h after the "
    "customer's last message.\n\n"
    "{commands}": (
        "<b>Bridge WhatsApp</b>\n"
        "Setiap pelanggan WhatsApp punya topik sendiri di sini. Tulis di topik itu untuk "
        "membalas: teks, foto, dokumen, video, audio, dan pesan suara akan sampai ke pelanggan. "
        "Reaksi pada pesan Anda menunjukkan hasilnya: 😴 masih menunggu, 🕊 diterima, "
        "👌 terkirim, 👀 dibaca, 💔 gagal.\n"
        "Pesan yang diawali <code>{note}</code> adalah catatan antaroperator dan tetap di sini. "
        "Untuk mengirim teks yang diawali “/”, tulis garis miring terbalik di depannya: "
        "<code>\\/home</code>. "
        "Hasil edit pesan tidak sampai ke WhatsApp. Balasan bebas dapat dikirim dalam "
        "{hours:g} jam setelah pesan terakhir pelanggan.\n\n"
        "{commands}"
    ),
    "<b>NusaSMS balance</b>": "<b>Saldo NusaSMS</b>",
    " (until {date})": " (berlaku sampai {date})",
    "• {field}: until {date}": "• {field}: berlaku sampai {date}",
    "<i>read {when}</i>": "<i>diperiksa {when}</i>",
    "⚠️ NusaSMS did not answer the balance request; see /status.": (
        "⚠️ NusaSMS tidak menjawab permintaan saldo; lihat /status."
    ),
    "/{name} works inside a customer's topic.": (
        "/{name} hanya dapat dipakai di dalam topik pelanggan."
    ),
    "open until": "terbuka sampai",
    "closed at": "ditutup pada",
    "<b>{number}</b>\n"
    "Room: <code>{room}</code>\n"
    "Reply window: {state} {when}\n"
    "Messages: {received} from the customer, {sent} replies\n"
    "Last reply status: {status}": (
        "<b>{number}</b>\n"
        "Ruang obrolan: <code>{room}</code>\n"
        "Jendela balasan: {state} {when}\n"
        "Pesan: {received} dari pelanggan, {sent} balasan\n"
        "Status balasan terakhir: {status}"
    ),
    "<b>Bridge ready</b>": "<b>Bridge siap</b>",
    "<b>Bridge NOT ready</b>": "<b>Bridge BELUM siap</b>",
    "To Telegram: {waiting} waiting (oldest {age:.0f} s)": (
        "Ke Telegram: {waiting} menunggu (terlama {age:.0f} dtk)"
    ),
    "To WhatsApp: {waiting} waiting (oldest {age:.0f} s)": (
        "Ke WhatsApp: {waiting} menunggu (terlama {age:.0f} dtk)"
    ),
    "Last callback: {when}": "Callback terakhir: {when}",
    "none yet": "belum ada",
    "Last error: {error}": "Error terakhir: {error}",
    "none": "tidak ada",
    # --- feedback.py: what became of a reply ---
    "🔁 Retry": "🔁 Coba lagi",
    "no reason given": "tanpa keterangan",
    "💔 <b>Not delivered to WhatsApp.</b>\nReason: {reason}": (
        "💔 <b>Tidak terkirim ke WhatsApp.</b>\nAlasan: {reason}"
    ),
    "🤔 <b>Outcome unknown.</b> NusaSMS may or may not have sent this message "
    "({reason}).\nCheck with the customer before you press Retry: it sends it again.": (
        "🤔 <b>Hasil tidak diketahui.</b> NusaSMS mungkin sudah atau belum mengirim pesan ini "
        "({reason}).\nTanyakan dulu kepada pelanggan sebelum menekan Coba lagi: pesan ini "
        "akan dikirim ulang."
    ),
    # --- replies.py: operators' messages that are not sent, the Retry button's answers ---
    "stickers": "stiker",
    "round video messages": "pesan video bulat",
    "locations": "lokasi",
    "venues": "tempat",
    "contacts": "kontak",
    "polls": "polling",
    "dice": "dadu",
    "games": "game",
    "stories": "story",
    "paid media": "media berbayar",
    "invoices": "tagihan",
    "checklists": "daftar periksa",
    "the file is larger than the 20 MB bots may fetch": (
        "ukuran file melebihi 20 MB, batas yang dapat diambil bot"
    ),
    "Telegram no longer has this file": "file ini sudah tidak tersedia di Telegram",
    "🚫 Not sent: {what} cannot be sent to WhatsApp.": (
        "🚫 Tidak terkirim: {what} tidak dapat dikirim ke WhatsApp."
    ),
    "🚫 Not sent: the file is {size:.1f} MB, and bots can only fetch files up to "
    "20 MB from Telegram. Send a smaller file, or a link to it.": (
        "🚫 Tidak terkirim: ukuran file {size:.1f} MB, sedangkan bot hanya dapat mengambil file "
        "hingga 20 MB dari Telegram. Kirim file yang lebih kecil, atau tautan ke file tersebut."
    ),
    "⏰ Not sent: the reply window closed at {when} "
    "({tz}). Free-form replies are only possible within "
    "{hours:g} hours of the customer's last message; the "
    "customer has to write again (or reach them with an approved template).": (
        "⏰ Tidak terkirim: jendela balasan sudah ditutup pada {when} ({tz}). Balasan bebas hanya "
        "dapat dikirim dalam {hours:g} jam setelah pesan terakhir pelanggan; pelanggan perlu "
        "menulis lagi (atau hubungi pelanggan dengan template yang sudah disetujui)."
    ),
    "⚠️ Not sent: the bridge could not store this message just now. Please send it again.": (
        "⚠️ Tidak terkirim: bridge tidak dapat menyimpan pesan ini saat ini. Silakan kirim ulang."
    ),
    "✏️ Edits do not reach WhatsApp: the customer keeps the first version. "
    "Send a new message to correct it.": (
        "✏️ Hasil edit tidak sampai ke WhatsApp: pelanggan tetap melihat versi pertama. "
        "Kirim pesan baru untuk mengoreksinya."
    ),
    "Unknown button.": "Tombol tidak dikenal.",
    "Only operators can retry.": "Hanya operator yang dapat mengirim ulang.",
    "Sending again.": "Sedang dikirim ulang.",
    "Unknown message.": "Pesan tidak dikenal.",
    "The bridge could not store this just now. Press Retry again in a moment.": (
        "Bridge tidak dapat menyimpan ini sekarang. Tekan Coba lagi sebentar lagi."
    ),
    "🚫 Not sent: <code>{token}</code> is no command of this "
    "bot, and messages starting with “/” stay in Telegram. To send text that starts "
    "with “/”, put a backslash before it: <code>{escaped}</code> "
    "(the customer gets it without the backslash).": (
        "🚫 Tidak terkirim: <code>{token}</code> bukan perintah bot ini, dan pesan yang "
        "diawali “/” tetap di Telegram. Untuk mengirim teks yang diawali “/”, tulis garis "
        "miring terbalik di depannya: <code>{escaped}</code> (pelanggan menerimanya tanpa "
        "garis miring terbalik)."
    ),
    ", until the reply window closes at {when}": (", sampai jendela balasan ditutup pada {when}"),
    "⏳ <b>Not sent yet.</b> NusaSMS is busy or unreachable (last attempt: {reason}). "
    "The bridge keeps trying{until}; this message and the ones after it go out "
    "in order as soon as NusaSMS takes them.": (
        "⏳ <b>Belum terkirim.</b> NusaSMS sedang sibuk atau tidak dapat dihubungi (percobaan "
        "terakhir: {reason}). Bridge terus mencoba{until}; pesan ini dan pesan sesudahnya "
        "dikirim berurutan begitu NusaSMS menerimanya."
    ),
    "Nothing to retry: it was already sent again.": (
        "Tidak ada yang perlu dikirim ulang: pesan ini sudah dikirim lagi."
    ),
    # --- alerts.py: the Alerts topic ---
    "🔔 Alerts": "🔔 Peringatan",
    "🔑 NusaSMS rejected the API key ({reason}). Replies and "
    "balance checks fail until nusasms.api_key is fixed or this IP is whitelisted.": (
        "🔑 NusaSMS menolak API key ({reason}). Balasan dan pengecekan saldo akan gagal sampai "
        "nusasms.api_key diperbaiki atau IP ini dimasukkan ke whitelist."
    ),
    "🔑 NusaSMS accepts the API key again.": "🔑 NusaSMS kembali menerima API key.",
    "💸 Low balance: <b>{field}</b> is {value:g}, below {threshold:g}. "
    "Top up at app.nusasms.com.": (
        "💸 Saldo menipis: <b>{field}</b> tinggal {value:g}, di bawah {threshold:g}. "
        "Silakan isi ulang di app.nusasms.com."
    ),
    "✅ {field} is back at {value:g} (threshold {threshold:g}).": (
        "✅ {field} kembali ke {value:g} (ambang batas {threshold:g})."
    ),
    "✅ {field} now runs until {date}.": "✅ {field} kini berlaku sampai {date}.",
    "to Telegram": "ke Telegram",
    "to WhatsApp": "ke WhatsApp",
    "⏳ {count} message(s) waiting to go {where}, the oldest for {minutes:.0f} min. See /status.": (
        "⏳ {count} pesan menunggu dikirim {where}, yang terlama sudah {minutes:.0f} menit. "
        "Lihat /status."
    ),
    "✅ Messages flow {where} again.": "✅ Pesan kembali terkirim {where}.",
    "⚠️ Bridge stopped posting: the group now has id {chat_id}: set "
    "telegram.chat_id to {chat_id} and restart the bridge.": (
        "⚠️ Bridge berhenti mengirim: ID grup sekarang {chat_id}. Ubah telegram.chat_id "
        "menjadi {chat_id} lalu jalankan ulang bridge."
    ),
    "Reminder: {text}": "Pengingat: {text}",
    "⌛ <b>{field}</b> expired on {date}.": "⌛ <b>{field}</b> sudah kedaluwarsa pada {date}.",
    "⌛ <b>{field}</b> expires on {date} (in {days} day(s)).": (
        "⌛ <b>{field}</b> akan kedaluwarsa pada {date} ({days} hari lagi)."
    ),
    # --- outbox.py: why a reply failed (shown in the notice under it) ---
    "the bridge stopped while sending it": "bridge berhenti saat pesan ini sedang dikirim",
    "internal error after sending it": "error internal setelah pesan dikirim",
    "internal error": "error internal",
    "cannot fetch the file from Telegram: {error}": (
        "berkas tidak dapat diambil dari Telegram: {error}"
    ),
    "internal error after sending it: {error}": "error internal setelah pesan dikirim: {error}",
    "unknown room": "ruang obrolan tidak dikenal",
    "the reply window closed at {when} before it could be sent": (
        "jendela balasan sudah ditutup pada {when} sebelum pesan sempat dikirim"
    ),
    "WhatsApp reports the message {status}": "WhatsApp melaporkan status pesan: {status}",
    # --- templates: the send path (outbox.py, feedback.py) ---
    "the stored template is unreadable: {error}": (
        "template yang tersimpan tidak dapat dibaca: {error}"
    ),
    "a file as header media needs nusasms.media_mode: url (give the media's URL instead)": (
        "berkas sebagai media header memerlukan nusasms.media_mode: url (berikan URL medianya saja)"
    ),
    "📨 <b>Template</b>\n{text}": "📨 <b>Template</b>\n{text}",
    # --- pending replies and reopen templates (replies.py, outbox.py, feedback.py, reopen.py)
    "🗑 <b>Dropped, not sent to WhatsApp.</b>\nReason: {reason}": (
        "🗑 <b>Dibuang, tidak dikirim ke WhatsApp.</b>\nAlasan: {reason}"
    ),
    "the customer did not write again within {hours:g} hours, so it was not sent": (
        "pelanggan tidak menulis lagi dalam {hours:g} jam, jadi pesan tidak dikirim"
    ),
    "NusaSMS has no template named {name}": "NusaSMS tidak punya template bernama {name}",
    "the template {name} is not approved ({status})": (
        "template {name} belum disetujui ({status})"
    ),
    "Sending the template.": "Mengirim template.",
    "⏰ <b>Kept, not sent yet:</b> the reply window closed at {when} ({tz}). This message "
    "goes out by itself, in order, as soon as the customer writes again (if they do within "
    "{hours:g} hours).": (
        "⏰ <b>Disimpan, belum dikirim:</b> jendela balasan sudah ditutup pada {when} ({tz}). "
        "Pesan ini terkirim sendiri, berurutan, begitu pelanggan menulis lagi (jika dalam "
        "{hours:g} jam)."
    ),
    "To invite the customer to write now, send a template:": (
        "Untuk mengajak pelanggan menulis sekarang, kirim template:"
    ),
    "A template was already sent from this message.": ("Template sudah dikirim dari pesan ini."),
    "The bridge could not store this just now. Press again in a moment.": (
        "Bridge tidak dapat menyimpan ini sekarang. Tekan lagi sebentar lagi."
    ),
    "📨 The bridge sent the template {name} to invite them back.": (
        "📨 Bridge mengirim template {name} untuk mengajak pelanggan kembali."
    ),
    "The reopen template could not be sent: {reason}": (
        "Template pembuka tidak dapat dikirim: {reason}"
    ),
    "Not sent: {reason}": "Tidak dikirim: {reason}",
    "📨 Send {name}": "📨 Kirim {name}",
    # --- picker.py, commands.py: choosing and sending templates ---
    "Tap a template inside a customer's topic to fill it in step by step.": (
        "Ketuk sebuah template di dalam topik pelanggan untuk mengisinya langkah demi langkah."
    ),
    "Only operators can send templates.": "Hanya operator yang dapat mengirim template.",
    "Tap it inside a customer's topic.": "Ketuk di dalam topik pelanggan.",
    "This template is no longer approved.": "Template ini tidak lagi disetujui.",
    "This preview was already answered (or the bridge restarted).": (
        "Pratinjau ini sudah dijawab (atau bridge dimulai ulang)."
    ),
    "Sending.": "Mengirim.",
    "Cancelled.": "Dibatalkan.",
    "🚫 {problem}. Channels: {channels}": "🚫 {problem}. Channel: {channels}",
    "No approved template.": "Tidak ada template yang disetujui.",
    "<b>Not approved</b> (cannot be sent):": "<b>Belum disetujui</b> (tidak dapat dikirim):",
    " /templates lists them.": " /templates menampilkan daftarnya.",
    "The templates cannot be read just now.": "Template tidak dapat dibaca saat ini.",
    "Unknown room.": "Ruang obrolan tidak dikenal.",
    "Not stored; press Send again.": "Tidak tersimpan; tekan Kirim lagi.",
    "<b>Templates</b> (channel <code>{channel}</code>)": (
        "<b>Template</b> (channel <code>{channel}</code>)"
    ),
    "/template works inside a customer's topic.": (
        "/template hanya berfungsi di dalam topik pelanggan."
    ),
    "Usage: <code>/template NAME value1 | value2 …</code>; /templates lists them.": (
        "Cara pakai: <code>/template NAMA nilai1 | nilai2 …</code>; /templates "
        "menampilkan daftarnya."
    ),
    "Nothing to cancel.": "Tidak ada yang dibatalkan.",
    "… and {count} more.": "… dan {count} lainnya.",
    " Did you mean: {names}?": " Maksud Anda: {names}?",
    "⚠️ Not sent: the bridge could not store this just now. Please try again.": (
        "⚠️ Tidak terkirim: bridge tidak dapat menyimpannya saat ini. Silakan coba lagi."
    ),
    "Please answer with text.": "Silakan jawab dengan teks.",
    "<b>Preview</b> of {name}:\n\n{text}": "<b>Pratinjau</b> {name}:\n\n{text}",
    "🚫 Not sent: template <code>{name}</code> is not approved (status {status}).": (
        "🚫 Tidak terkirim: template <code>{name}</code> belum disetujui (status {status})."
    ),
    "✍️ <b>{name}</b>: send {slot} ({step} of {steps}) as your next message here, or /cancel.": (
        "✍️ <b>{name}</b>: kirim {slot} ({step} dari {steps}) sebagai pesan Anda "
        "berikutnya di sini, atau /cancel."
    ),
    "⚠️ NusaSMS did not give the templates just now: {error}": (
        "⚠️ NusaSMS tidak memberikan daftar template saat ini: {error}"
    ),
    "🚫 Not sent: the values cannot be read ({error}).": (
        "🚫 Tidak terkirim: nilai-nilainya tidak dapat dibaca ({error})."
    ),
    "🚫 Not sent: {reason}.\nUsage: <code>{usage}</code>": (
        "🚫 Tidak terkirim: {reason}.\nCara pakai: <code>{usage}</code>"
    ),
    "🚫 No template is called <code>{name}</code>.": (
        "🚫 Tidak ada template bernama <code>{name}</code>."
    ),
    "🚫 Not sent: {reason}.": "🚫 Tidak terkirim: {reason}.",
    "✅ Send": "✅ Kirim",
    "✖️ Cancel": "✖️ Batal",
    "The approved WhatsApp templates, to send one": (
        "Template WhatsApp yang disetujui, untuk mengirimnya"
    ),
    "In a customer's topic: send a template (/template NAME v1 | v2)": (
        "Di topik pelanggan: kirim template (/template NAMA n1 | n2)"
    ),
    "Stop filling in a template": "Berhenti mengisi template",
    "Templates sent: {today} today, {yesterday} yesterday": (
        "Template terkirim: {today} hari ini, {yesterday} kemarin"
    ),
    # --- one topic per customer, /new (customers.py, commands.py) ---
    '➡️ {number} now has one topic for all their conversations: <a href="{link}">open it</a>. '
    "Replies written here still reach them.": (
        '➡️ {number} kini punya satu topik untuk semua percakapannya: <a href="{link}">buka</a>. '
        "Balasan yang ditulis di sini tetap sampai kepadanya."
    ),
    "Rooms of this customer:": ("Room pelanggan ini:"),
    "<code>{room}</code>: first {first}, last {last}": (
        "<code>{room}</code>: pertama {first}, terakhir {last}"
    ),
    "none yet (the customer never wrote)": ("belum ada (pelanggan belum pernah menulis)"),
    "Templates sent: {count}": ("Template terkirim: {count}"),
    "In General: /new +62812… [name] starts a conversation with a customer": (
        "Di General: /new +62812… [nama] memulai percakapan dengan pelanggan"
    ),
    "/new works in the General topic, not inside a topic.": (
        "/new hanya berfungsi di topik General, bukan di dalam topik."
    ),
    "Usage: /new {format} [name]": ("Cara pakai: /new {format} [nama]"),
    "🚫 {number} is not a phone number. Expected: {format}": (
        "🚫 {number} bukan nomor telepon. Format yang diharapkan: {format}"
    ),
    '{number} already has a topic: <a href="{link}">open it</a>.': (
        '{number} sudah punya topik: <a href="{link}">buka</a>.'
    ),
    "<b>{who}</b>\nNo reply window is open yet: the customer has never written. WhatsApp lets the "
    "first message be an approved template only.": (
        "<b>{who}</b>\nBelum ada jendela balasan yang terbuka: pelanggan belum pernah menulis. "
        "WhatsApp hanya mengizinkan template yang disetujui sebagai pesan pertama."
    ),
    'Topic for {number} created: <a href="{link}">open it</a>.': (
        'Topik untuk {number} dibuat: <a href="{link}">buka</a>.'
    ),
    "To write first, send a template here: /templates lists them, <code>/template NAME value1 | "
    "value2</code> sends one.": (
        "Untuk menulis lebih dulu, kirim template di sini: /templates menampilkan daftarnya, "
        "<code>/template NAMA nilai1 | nilai2</code> mengirimnya."
    ),
}
