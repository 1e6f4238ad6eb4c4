"""Realistic inbound webhook traffic, deterministic for a seed (demos and load tests).

Customers write in English, Bengali (Bangla script and romanised), Arabic, Indonesian, Turkish
and Spanish about a ticketing / shop business: greetings, tickets, seats, orders, refunds,
cancellations, payments, product questions, complaints, asking for a human, stopping and
resuming promotions, and chatter the business cannot help with. Some arrive from
click-to-WhatsApp ads (``referral``), some are interactive button replies or template
quick-reply taps, and some customers are username-only (a business-scoped user id, no phone
number). Several messages are batched into one webhook, across numbers and ``entry[]``.

Each generated message also carries its ground truth (language, intent) in the returned
records, which are not part of the payload: routers can measure themselves against it.
"""

from __future__ import annotations

import random
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

LANGUAGES = ("en", "bn", "bn-Latn", "ar", "id", "tr", "es")
INTENTS = (
    "greeting",
    "buy_ticket",
    "choose_seat",
    "order_status",
    "refund",
    "cancel",
    "payment",
    "product_info",
    "complaint",
    "human",
    "opt_out",
    "opt_in",
    "out_of_scope",
)
INTENT_WEIGHTS = (12, 12, 6, 12, 7, 6, 6, 10, 6, 5, 4, 2, 8)

# {n}: a number, {order}: an order reference, {city}: a destination.
PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "greeting": ("Hi there!", "Hello, good morning", "hey"),
        "buy_ticket": (
            "I want to buy {n} tickets to {city}",
            "Can I book a ticket for Friday?",
            "how much is a ticket to {city}",
        ),
        "choose_seat": (
            "Can I get a window seat?",
            "I'd like seat {n}A please",
            "can we sit together, 2 seats",
        ),
        "order_status": (
            "Where is my order {order}?",
            "Any update on order {order}",
            "my parcel hasn't arrived yet",
        ),
        "refund": (
            "I want a refund for {order}",
            "How do I get my money back?",
            "refund please, item was broken",
        ),
        "cancel": ("Please cancel my booking {order}", "I need to cancel my order", "cancel my ticket"),
        "payment": ("My card payment failed", "Can I pay with bank transfer?", "I was charged twice"),
        "product_info": (
            "Does it come in another color?",
            "What sizes do you have?",
            "Is the blue one in stock?",
        ),
        "complaint": (
            "This is the worst service ever",
            "The driver was very rude",
            "I've been waiting an hour, unacceptable",
        ),
        "human": ("Can I talk to a real person?", "agent please", "I want to speak to a human"),
        "opt_out": ("STOP", "Stop sending me promotions", "unsubscribe"),
        "opt_in": ("START", "Please send me your offers again", "subscribe me to deals"),
        "out_of_scope": ("What's the weather like today?", "tell me a joke", "who won the match last night?"),
    },
    "bn": {
        "greeting": ("হ্যালো", "আসসালামু আলাইকুম", "শুভ সকাল"),
        "buy_ticket": (
            "{city} যাওয়ার {n}টা টিকিট কিনতে চাই",
            "শুক্রবারের টিকিট বুক করা যাবে?",
            "{city} এর টিকিটের দাম কত?",
        ),
        "choose_seat": ("জানালার পাশের সিট পেতে পারি?", "আমাকে {n}A সিটটা দিন", "দুজন পাশাপাশি বসতে চাই"),
        "order_status": ("আমার অর্ডার {order} কোথায়?", "অর্ডার {order} এর কী অবস্থা?", "আমার পার্সেল এখনো আসেনি"),
        "refund": ("{order} এর টাকা ফেরত চাই", "টাকা ফেরত পাব কীভাবে?", "জিনিসটা ভাঙা ছিল, রিফান্ড দিন"),
        "cancel": ("আমার বুকিং {order} বাতিল করুন", "অর্ডারটা বাতিল করতে চাই", "টিকিট বাতিল করুন"),
        "payment": ("কার্ডে পেমেন্ট হয়নি", "বিকাশে পেমেন্ট করা যাবে?", "আমার দুবার টাকা কেটেছে"),
        "product_info": ("এটা কি অন্য রঙে পাওয়া যায়?", "কোন কোন সাইজ আছে?", "নীলটা কি স্টকে আছে?"),
        "complaint": ("আপনাদের সার্ভিস খুবই খারাপ", "ড্রাইভার খুব খারাপ ব্যবহার করেছে", "এক ঘণ্টা ধরে অপেক্ষা করছি"),
        "human": ("একজন মানুষের সাথে কথা বলতে চাই", "এজেন্টের সাথে কথা বলব", "কাস্টমার কেয়ারে দিন"),
        "opt_out": ("বন্ধ করুন", "আর প্রচারণা পাঠাবেন না", "আনসাবস্ক্রাইব"),
        "opt_in": ("আবার অফার পাঠান", "চালু করুন", "অফারগুলো পেতে চাই"),
        "out_of_scope": ("আজ আবহাওয়া কেমন?", "একটা কৌতুক বলো", "কাল রাতের খেলায় কে জিতেছে?"),
    },
    "bn-Latn": {
        "greeting": ("hello bhai", "assalamu alaikum", "ki obostha"),
        "buy_ticket": (
            "{city} er {n} ta ticket kinte chai",
            "shukrobar er ticket book kora jabe?",
            "{city} ticket er dam koto?",
        ),
        "choose_seat": ("janalar pasher seat pabo?", "amake {n}A seat ta din", "dujon pasapasi bosbo"),
        "order_status": (
            "amar order {order} kothay?",
            "order {order} er ki obostha",
            "parcel ekhono ashe nai",
        ),
        "refund": (
            "{order} er taka ferot chai",
            "taka ferot pabo kivabe?",
            "jinish ta bhanga chilo, refund din",
        ),
        "cancel": (
            "amar booking {order} cancel koren",
            "order ta cancel korte chai",
            "ticket cancel koren plz",
        ),
        "payment": ("card e payment hoy nai", "bkash e payment kora jabe?", "duibar taka ketse"),
        "product_info": ("eta ki onno rong e ache?", "ki ki size ache?", "nil ta ki stock e ache?"),
        "complaint": (
            "apnader service khub baje",
            "driver khub kharap beboher korse",
            "ek ghonta dhore wait kortesi",
        ),
        "human": ("manush er sathe kotha bolte chai", "agent er sathe kotha bolbo", "customer care e din"),
        "opt_out": ("bondho koren", "ar offer pathaben na", "unsubscribe koren"),
        "opt_in": ("abar offer pathan", "chalu koren", "offer gula pete chai"),
        "out_of_scope": ("aj weather kemon?", "ekta joke bolo", "kal raater khelay ke jitse?"),
    },
    "ar": {
        "greeting": ("مرحبا", "السلام عليكم", "صباح الخير"),
        "buy_ticket": (
            "أريد شراء {n} تذاكر إلى {city}",
            "هل يمكنني حجز تذكرة ليوم الجمعة؟",
            "كم سعر التذكرة إلى {city}؟",
        ),
        "choose_seat": (
            "هل يمكنني الحصول على مقعد بجانب النافذة؟",
            "أريد المقعد {n}A من فضلك",
            "نريد مقعدين متجاورين",
        ),
        "order_status": ("أين طلبي {order}؟", "هل من جديد بخصوص الطلب {order}", "لم تصل شحنتي بعد"),
        "refund": (
            "أريد استرداد المبلغ للطلب {order}",
            "كيف أسترجع أموالي؟",
            "المنتج وصل مكسورا، أريد استرداد المبلغ",
        ),
        "cancel": ("الرجاء إلغاء حجزي {order}", "أريد إلغاء طلبي", "ألغِ التذكرة من فضلك"),
        "payment": ("فشل الدفع بالبطاقة", "هل يمكنني الدفع بتحويل بنكي؟", "تم خصم المبلغ مرتين"),
        "product_info": ("هل يتوفر بلون آخر؟", "ما هي المقاسات المتوفرة؟", "هل اللون الأزرق متوفر؟"),
        "complaint": ("هذه أسوأ خدمة على الإطلاق", "السائق كان وقحا جدا", "أنتظر منذ ساعة، هذا غير مقبول"),
        "human": ("أريد التحدث مع موظف", "خدمة العملاء من فضلك", "هل يمكنني التحدث مع شخص حقيقي؟"),
        "opt_out": ("توقف", "أوقفوا إرسال العروض", "إلغاء الاشتراك"),
        "opt_in": ("أرسلوا لي العروض مرة أخرى", "اشتراك", "أريد استقبال العروض"),
        "out_of_scope": ("كيف الطقس اليوم؟", "احكِ لي نكتة", "من فاز في مباراة البارحة؟"),
    },
    "id": {
        "greeting": ("Halo kak", "Selamat pagi", "permisi"),
        "buy_ticket": (
            "Saya mau beli {n} tiket ke {city}",
            "Bisa pesan tiket untuk hari Jumat?",
            "berapa harga tiket ke {city}?",
        ),
        "choose_seat": ("Bisa dapat kursi dekat jendela?", "Saya mau kursi {n}A", "kami mau duduk berdua"),
        "order_status": (
            "Pesanan saya {order} sudah sampai mana?",
            "Ada kabar pesanan {order}?",
            "paket saya belum datang",
        ),
        "refund": (
            "Saya minta refund untuk {order}",
            "Bagaimana cara uang saya kembali?",
            "barangnya rusak, minta refund",
        ),
        "cancel": ("Tolong batalkan pesanan {order}", "Saya mau membatalkan pesanan", "batalin tiket saya"),
        "payment": (
            "Pembayaran kartu saya gagal",
            "Bisa bayar pakai transfer bank?",
            "saldo saya terpotong dua kali",
        ),
        "product_info": ("Ada warna lain tidak?", "Ukurannya apa saja?", "Yang biru ready stok?"),
        "complaint": (
            "Pelayanannya buruk sekali",
            "Sopirnya sangat tidak sopan",
            "Sudah sejam menunggu, kecewa",
        ),
        "human": ("Saya mau bicara dengan CS", "minta agen manusia", "bisa sambungkan ke admin?"),
        "opt_out": ("BERHENTI", "Jangan kirim promo lagi", "berhenti langganan"),
        "opt_in": ("Kirim promo lagi ya", "MULAI", "saya mau dapat penawaran"),
        "out_of_scope": ("Cuaca hari ini gimana?", "ceritakan lelucon dong", "siapa yang menang tadi malam?"),
    },
    "tr": {
        "greeting": ("Merhaba", "İyi günler", "selam"),
        "buy_ticket": (
            "{city} için {n} bilet almak istiyorum",
            "Cuma günü için bilet alabilir miyim?",
            "{city} bileti ne kadar?",
        ),
        "choose_seat": (
            "Cam kenarı koltuk alabilir miyim?",
            "{n}A koltuğunu istiyorum",
            "yan yana iki koltuk lütfen",
        ),
        "order_status": (
            "{order} numaralı siparişim nerede?",
            "{order} siparişimde gelişme var mı?",
            "kargom hâlâ gelmedi",
        ),
        "refund": (
            "{order} için iade istiyorum",
            "Paramı nasıl geri alırım?",
            "ürün kırık geldi, iade lütfen",
        ),
        "cancel": (
            "{order} rezervasyonumu iptal edin lütfen",
            "Siparişimi iptal etmek istiyorum",
            "biletimi iptal et",
        ),
        "payment": ("Kartla ödemem başarısız oldu", "Havale ile ödeyebilir miyim?", "iki kez ücret alındı"),
        "product_info": ("Başka rengi var mı?", "Hangi bedenler mevcut?", "Mavi olan stokta var mı?"),
        "complaint": (
            "Bu şimdiye kadarki en kötü hizmet",
            "Şoför çok kabaydı",
            "Bir saattir bekliyorum, kabul edilemez",
        ),
        "human": (
            "Bir yetkiliyle görüşmek istiyorum",
            "müşteri temsilcisi lütfen",
            "gerçek bir insanla konuşabilir miyim?",
        ),
        "opt_out": ("DUR", "Kampanya mesajı göndermeyin", "abonelikten çık"),
        "opt_in": ("Kampanyaları tekrar gönderin", "BAŞLAT", "fırsatlardan haberdar olmak istiyorum"),
        "out_of_scope": ("Bugün hava nasıl?", "bana bir fıkra anlat", "dün akşamki maçı kim kazandı?"),
    },
    "es": {
        "greeting": ("Hola", "Buenos días", "buenas"),
        "buy_ticket": (
            "Quiero comprar {n} boletos para {city}",
            "¿Puedo reservar un billete para el viernes?",
            "¿cuánto cuesta el boleto a {city}?",
        ),
        "choose_seat": (
            "¿Me puede dar un asiento de ventanilla?",
            "Quiero el asiento {n}A",
            "queremos sentarnos juntos",
        ),
        "order_status": (
            "¿Dónde está mi pedido {order}?",
            "¿Novedades del pedido {order}?",
            "mi paquete no ha llegado",
        ),
        "refund": (
            "Quiero un reembolso del pedido {order}",
            "¿Cómo recupero mi dinero?",
            "llegó roto, quiero reembolso",
        ),
        "cancel": (
            "Por favor cancelen mi reserva {order}",
            "Necesito cancelar mi pedido",
            "cancela mi boleto",
        ),
        "payment": ("Mi pago con tarjeta falló", "¿Puedo pagar por transferencia?", "me cobraron dos veces"),
        "product_info": ("¿Viene en otro color?", "¿Qué tallas tienen?", "¿El azul está disponible?"),
        "complaint": (
            "Es el peor servicio que he tenido",
            "El conductor fue muy grosero",
            "Llevo una hora esperando",
        ),
        "human": ("¿Puedo hablar con una persona?", "un agente por favor", "quiero hablar con un humano"),
        "opt_out": ("BAJA", "No me envíen más promociones", "darme de baja"),
        "opt_in": ("Envíenme ofertas otra vez", "ALTA", "quiero recibir promociones"),
        "out_of_scope": ("¿Qué tiempo hace hoy?", "cuéntame un chiste", "¿quién ganó el partido anoche?"),
    },
}

CITIES = {
    "en": ("London", "Manchester", "Delhi"),
    "bn": ("ঢাকা", "চট্টগ্রাম", "সিলেট"),
    "bn-Latn": ("Dhaka", "Chittagong", "Sylhet"),
    "ar": ("الرياض", "جدة", "القاهرة"),
    "id": ("Jakarta", "Bandung", "Surabaya"),
    "tr": ("İstanbul", "Ankara", "İzmir"),
    "es": ("Madrid", "Ciudad de México", "Buenos Aires"),
}
NAMES = {
    "en": ("Sheena Nelson", "James Carter", "Priya Sharma", "Olivia Brown", "Tom Walsh"),
    "bn": ("রহিম উদ্দিন", "ফাতেমা খাতুন", "সাকিব হাসান", "নুসরাত জাহান"),
    "bn-Latn": ("Rahim Uddin", "Fatema Khatun", "Sakib Hasan", "Nusrat Jahan"),
    "ar": ("محمد العتيبي", "فاطمة الزهراء", "أحمد حسن", "نورة القحطاني"),
    "id": ("Budi Santoso", "Siti Rahayu", "Agus Wijaya", "Dewi Lestari"),
    "tr": ("Mehmet Yılmaz", "Ayşe Demir", "Emre Kaya", "Zeynep Çelik"),
    "es": ("María García", "José Martínez", "Lucía Fernández", "Carlos López"),
}
# (calling code, ISO country) per language, for phone numbers and BSUID prefixes.
COUNTRIES = {
    "en": (("44", "GB"), ("1", "US"), ("91", "IN")),
    "bn": (("880", "BD"),),
    "bn-Latn": (("880", "BD"),),
    "ar": (("966", "SA"), ("20", "EG"), ("971", "AE")),
    "id": (("62", "ID"),),
    "tr": (("90", "TR"),),
    "es": (("34", "ES"), ("52", "MX"), ("54", "AR")),
}
# Titles of reply buttons the business would have sent, and the intent a tap expresses.
BUTTON_REPLIES = (
    ("btn_order_status", "Track my order", "order_status"),
    ("btn_buy", "Buy tickets", "buy_ticket"),
    ("btn_agent", "Talk to an agent", "human"),
    ("btn_refund", "Request refund", "refund"),
)
AD_CAMPAIGNS = (
    ("120226305854810726", "Summer sale: 20% off", "Chat with us", "image"),
    ("120226305854810999", "Weekend trips from $19", "Book on WhatsApp", "video"),
    ("120226305854811234", "New arrivals are here", "Ask us anything", "image"),
)


@dataclass(frozen=True)
class BusinessNumber:
    phone_number_id: str
    waba_id: str
    display_phone_number: str
    app_id: str = ""


@dataclass(frozen=True)
class Customer:
    language: str
    name: str
    wa_id: str | None  # None for a username-only user
    user_id: str  # business-scoped user id (BSUID), always known to Meta
    username: str | None
    country: str

    @property
    def id(self) -> str:
        """The identity the business (and the simulator's windows) key on."""
        return self.wa_id or self.user_id


@dataclass(frozen=True)
class InboundRecord:
    """Ground truth of one generated message (not part of the payload)."""

    phone_number_id: str
    waba_id: str
    customer_id: str
    wamid: str
    timestamp: int
    language: str
    intent: str
    type: str
    referral: bool
    username_only: bool
    phone: str | None = None  # the number the webhook named (None: a username-only user)
    user_id: str | None = None  # the BSUID the webhook named


@dataclass
class InboundWebhook:
    app_id: str
    payload: dict[str, Any]
    records: list[InboundRecord] = field(default_factory=list)


class TrafficGenerator:
    def __init__(
        self,
        numbers: list[BusinessNumber],
        *,
        seed: int = 1,
        customers_per_number: int = 40,
        referral_ratio: float = 0.12,
        username_only_ratio: float = 0.1,
        share_number_ratio: float = 0.2,
        interactive_ratio: float = 0.1,
        template_button_ratio: float = 0.04,
        max_messages_per_webhook: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not numbers:
            raise ValueError("at least one business number is needed")
        self.numbers = numbers
        self.rng = random.Random(seed)
        self.referral_ratio = referral_ratio
        self.username_only_ratio = username_only_ratio
        # a username-only user who writes again shares their number with this chance (then for good)
        self.share_number_ratio = share_number_ratio
        self._shared: dict[str, str] = {}  # BSUID -> the number a username-only user shared
        self.interactive_ratio = interactive_ratio
        self.template_button_ratio = template_button_ratio
        self.max_messages_per_webhook = max(1, max_messages_per_webhook)
        self.clock = clock
        self._customers: dict[str, list[Customer]] = {
            n.phone_number_id: [self._new_customer(i) for i in range(customers_per_number)] for n in numbers
        }
        self._seen: set[tuple[str, str]] = set()  # (number, customer) that already wrote

    def _new_customer(self, index: int) -> Customer:
        # Round-robin over languages first so every language is present even in small pools.
        language = LANGUAGES[index % len(LANGUAGES)] if index < len(LANGUAGES) else self.rng.choice(LANGUAGES)
        calling, iso = self.rng.choice(COUNTRIES[language])
        digits = "".join(self.rng.choice(string.digits) for _ in range(12 - len(calling)))
        # Never end in 0000: the simulator treats such numbers as not on WhatsApp by default.
        digits = digits[:-1] + self.rng.choice("123456789")
        username_only = self.rng.random() < self.username_only_ratio
        user_id = f"{iso}." + "".join(self.rng.choice(string.digits) for _ in range(19))
        name = self.rng.choice(NAMES[language])
        handle = "@" + "".join(self.rng.choice(string.ascii_lowercase) for _ in range(8))
        return Customer(
            language=language,
            name=name,
            wa_id=None if username_only else calling + digits,
            user_id=user_id,
            username=handle if username_only or self.rng.random() < 0.3 else None,
            country=iso,
        )

    def _phone_of(self, customer: Customer) -> str:
        """The number a username-only user shares: one of their country's, as generated for others."""
        calling = next((c for c, iso in COUNTRIES[customer.language] if iso == customer.country),
                       COUNTRIES[customer.language][0][0])
        digits = "".join(self.rng.choice(string.digits) for _ in range(12 - len(calling) - 1))
        return calling + digits + self.rng.choice("123456789")

    def _wamid(self) -> str:
        raw = "".join(self.rng.choice(string.ascii_uppercase + string.digits) for _ in range(32))
        return f"wamid.HBgL{raw}AA=="

    def _text(self, language: str, intent: str) -> str:
        phrase = self.rng.choice(PHRASES[language][intent])
        return phrase.format(
            n=self.rng.randint(1, 6),
            order=f"#{self.rng.randint(10000, 99999)}",
            city=self.rng.choice(CITIES[language]),
        )

    def message(
        self,
        number: BusinessNumber,
        customer: Customer,
        *,
        intent: str | None = None,
        timestamp: int | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any], InboundRecord]:
        """One message: its ``contacts[]`` item, its ``messages[]`` item and its ground truth."""
        ts = int(self.clock()) if timestamp is None else timestamp
        first = (number.phone_number_id, customer.id) not in self._seen
        self._seen.add((number.phone_number_id, customer.id))
        intent = intent or self.rng.choices(INTENTS, weights=INTENT_WEIGHTS)[0]
        wamid = self._wamid()
        msg: dict[str, Any] = {"id": wamid, "timestamp": str(ts)}
        if customer.wa_id is None and not first and customer.user_id not in self._shared \
                and self.rng.random() < self.share_number_ratio:
            self._shared[customer.user_id] = self._phone_of(customer)
        phone = customer.wa_id or self._shared.get(customer.user_id)
        if phone:
            msg["from"] = phone
        else:
            msg["from_user_id"] = customer.user_id
        roll = self.rng.random()
        if not first and roll < self.interactive_ratio and intent not in ("opt_out", "opt_in"):
            bid, title, intent = self.rng.choice(BUTTON_REPLIES)
            msg["type"] = "interactive"
            msg["interactive"] = {"type": "button_reply", "button_reply": {"id": bid, "title": title}}
            msg["context"] = {"from": number.display_phone_number, "id": self._wamid()}
        elif not first and roll < self.interactive_ratio + self.template_button_ratio:
            intent = self.rng.choice(("opt_out", "opt_in"))
            label = "Stop promotions" if intent == "opt_out" else "Resume promotions"
            msg["type"] = "button"
            msg["button"] = {"payload": label, "text": label}
            msg["context"] = {"from": number.display_phone_number, "id": self._wamid()}
        else:
            msg["type"] = "text"
            msg["text"] = {"body": self._text(customer.language, intent)}
        referral = first and self.rng.random() < self.referral_ratio
        if referral:
            ad_id, body, headline, media = self.rng.choice(AD_CAMPAIGNS)
            ref: dict[str, Any] = {
                "source_url": f"https://fb.me/{ad_id[-8:]}",
                "source_id": ad_id,
                "source_type": "ad",
                "body": body,
                "headline": headline,
                "media_type": media,
                f"{media}_url": f"https://scontent.example.invalid/{ad_id}.{media}",
                "welcome_message": {"text": "Hi! How can we help?"},
            }
            if self.rng.random() < 0.85:  # omitted for WhatsApp Status ad placements
                ref["ctwa_clid"] = "ARA" + "".join(
                    self.rng.choice(string.ascii_letters + string.digits + "-_") for _ in range(40)
                )
            msg["referral"] = ref
        contact: dict[str, Any] = {"profile": {"name": customer.name}}
        if customer.username:
            contact["profile"]["username"] = customer.username
        if phone:
            contact["wa_id"] = phone
        contact["user_id"] = customer.user_id
        record = InboundRecord(
            phone_number_id=number.phone_number_id,
            waba_id=number.waba_id,
            customer_id=customer.id,
            wamid=wamid,
            timestamp=ts,
            language=customer.language,
            intent=intent,
            type=msg["type"],
            referral=referral,
            username_only=phone is None,
            phone=phone,
            user_id=customer.user_id,
        )
        return contact, msg, record

    def next_webhook(self) -> InboundWebhook:
        """One signed-to-be webhook body: 1..N messages of numbers sharing one app."""
        app_id = self.rng.choice(sorted({n.app_id for n in self.numbers}))
        numbers = [n for n in self.numbers if n.app_id == app_id]
        count = self.rng.randint(1, self.max_messages_per_webhook)
        picks: list[tuple[BusinessNumber, Customer]] = []
        for _ in range(count):
            number = self.rng.choice(numbers)
            picks.append((number, self.rng.choice(self._customers[number.phone_number_id])))
        return build_webhook(
            app_id, [(n, *self.message(n, c)) for n, c in picks], split_entries=self.rng.random() < 0.3
        )

    def webhooks(self, messages: int) -> Iterator[InboundWebhook]:
        """Webhooks carrying ``messages`` messages in total."""
        left = messages
        while left > 0:
            hook = self.next_webhook()
            if len(hook.records) > left:
                kept = hook.records[:left]
                hook = build_webhook(hook.app_id, self._rebuild(hook, kept))
            left -= len(hook.records)
            yield hook

    def _rebuild(
        self, hook: InboundWebhook, kept: list[InboundRecord]
    ) -> list[tuple[BusinessNumber, dict[str, Any], dict[str, Any], InboundRecord]]:
        by_wamid = {r.wamid for r in kept}
        numbers = {n.phone_number_id: n for n in self.numbers}
        out = []
        records = {r.wamid: r for r in kept}
        for entry in hook.payload["entry"]:
            for change in entry["changes"]:
                value = change["value"]
                for contact, msg in zip(value["contacts"], value["messages"], strict=True):
                    if msg["id"] in by_wamid:
                        out.append(
                            (numbers[value["metadata"]["phone_number_id"]], contact, msg, records[msg["id"]])
                        )
        return out


def build_webhook(
    app_id: str,
    items: list[tuple[BusinessNumber, dict[str, Any], dict[str, Any], InboundRecord]],
    *,
    split_entries: bool = False,
) -> InboundWebhook:
    """Group messages into Meta's envelope: an entry per WABA, a change per number (contacts and
    messages aligned by index), or one entry per number when ``split_entries``."""
    by_waba: dict[str, dict[str, tuple[BusinessNumber, list[dict[str, Any]], list[dict[str, Any]]]]] = {}
    for number, contact, msg, _ in items:
        slot = by_waba.setdefault(number.waba_id, {}).setdefault(number.phone_number_id, (number, [], []))
        slot[1].append(contact)
        slot[2].append(msg)
    entries: list[dict[str, Any]] = []
    for waba_id, numbers in by_waba.items():
        changes = [
            {
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {
                        "display_phone_number": n.display_phone_number,
                        "phone_number_id": n.phone_number_id,
                    },
                    "contacts": contacts,
                    "messages": msgs,
                },
                "field": "messages",
            }
            for n, contacts, msgs in numbers.values()
        ]
        if split_entries:
            entries.extend({"id": waba_id, "changes": [c]} for c in changes)
        else:
            entries.append({"id": waba_id, "changes": changes})
    return InboundWebhook(
        app_id, {"object": "whatsapp_business_account", "entry": entries}, [r for *_, r in items]
    )


def custom_webhook(
    number: BusinessNumber,
    specs: list[dict[str, Any]],
    *,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
) -> InboundWebhook:
    """A webhook from explicit specs: ``{"from": wa_id | "from_user_id": bsuid (or both), "username": str,
    "text": str,
    "name": str, "timestamp": unix, "referral": bool | {...}, "button_reply": {"id", "title"},
    "order": {"catalog_id", "product_items"}, "nfm_reply": {"response_json"}}``."""
    rng = rng or random.Random()
    items = []
    for spec in specs:
        wamid = (
            spec.get("id")
            or "wamid.HBgL"
            + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(32))
            + "AA=="
        )
        ts = int(spec.get("timestamp") or clock())
        msg: dict[str, Any] = {"id": wamid, "timestamp": str(ts)}
        contact: dict[str, Any] = {"profile": {"name": spec.get("name", "Customer")}}
        if spec.get("username"):
            contact["profile"]["username"] = str(spec["username"])
        if spec.get("from"):  # with from_user_id too: a user who shares their number
            msg["from"] = contact["wa_id"] = str(spec["from"])
            if spec.get("from_user_id"):
                contact["user_id"] = str(spec["from_user_id"])
        elif spec.get("from_user_id"):  # a username-only user: no wa_id, no from
            msg["from_user_id"] = contact["user_id"] = str(spec["from_user_id"])
        else:
            raise ValueError("each inbound message needs 'from' or 'from_user_id'")
        if spec.get("button_reply"):
            msg["type"] = "interactive"
            msg["interactive"] = {"type": "button_reply", "button_reply": spec["button_reply"]}
        elif spec.get("order"):  # a cart from a catalog: {"catalog_id", "product_items": [...], "text"?}
            msg["type"] = "order"
            msg["order"] = spec["order"]
        elif spec.get("nfm_reply"):  # a completed Flow: {"name"?, "body"?, "response_json": str}
            msg["type"] = "interactive"
            reply = {"name": "flow", "body": "Sent", **spec["nfm_reply"]}
            msg["interactive"] = {"type": "nfm_reply", "nfm_reply": reply}
        else:
            msg["type"] = "text"
            msg["text"] = {"body": spec.get("text", "Hello")}
        if isinstance(spec.get("context"), dict):  # a reply to a business message: {"from", "id"}
            msg["context"] = spec["context"]
        referral = spec.get("referral")
        if referral:
            msg["referral"] = (
                referral
                if isinstance(referral, dict)
                else {
                    "source_url": "https://fb.me/sim",
                    "source_id": AD_CAMPAIGNS[0][0],
                    "source_type": "ad",
                    "headline": AD_CAMPAIGNS[0][2],
                    "body": AD_CAMPAIGNS[0][1],
                    "media_type": "image",
                    "ctwa_clid": "ARA" + "".join(rng.choice(string.ascii_letters) for _ in range(30)),
                }
            )
        customer_id = contact.get("wa_id") or contact["user_id"]
        record = InboundRecord(
            phone_number_id=number.phone_number_id,
            waba_id=number.waba_id,
            customer_id=customer_id,
            wamid=wamid,
            timestamp=ts,
            language=spec.get("language", "en"),
            intent=spec.get("intent", "unknown"),
            type=msg["type"],
            referral=bool(referral),
            username_only="wa_id" not in contact,
            phone=contact.get("wa_id"),
            user_id=contact.get("user_id"),
        )
        items.append((number, contact, msg, record))
    return build_webhook(number.app_id, items)
