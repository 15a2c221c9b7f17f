"""The fixed word lists the generator draws from: names, companies, products, pages, reasons.

Kept as data (no logic) so the realism of the data set can be tuned in one place. All values
are plain ASCII or simple Latin-1 letters and contain no quote or backslash, except the survey
comments, which deliberately contain commas and quotes to exercise CSV quoting.
"""

from __future__ import annotations

FIRST_NAMES = (
    "Anna", "Lukas", "Mia", "Leon", "Emma", "Paul", "Hannah", "Felix", "Sophie", "Jonas",
    "Lena", "Maximilian", "Laura", "Tim", "Julia", "Niklas", "Sarah", "David", "Lisa", "Jan",
    "John", "Mary", "James", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "William", "Elizabeth",
    "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Karen", "Daniel", "Nancy", "Matthew", "Betty",
    "Olivia", "Noah", "Ava", "Liam", "Emily", "Ethan", "Chloe", "Lucas", "Grace", "Henry",
)  # fmt: skip

LAST_NAMES = (
    "Mueller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
    "Koch", "Richter", "Klein", "Wolf", "Schroeder", "Neumann", "Schwarz", "Braun", "Zimmermann", "Krueger",
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Wilson", "Anderson", "Taylor", "Thomas", "Moore", "Jackson", "Martin", "Lee", "Thompson", "White",
    "Harris", "Clark", "Lewis", "Walker", "Hall", "Young", "King", "Wright", "Scott", "Green",
)  # fmt: skip

FREEMAIL_DOMAINS = ("gmail.com", "outlook.com", "web.de", "gmx.de", "yahoo.com", "icloud.com", "t-online.de")

# Canonical company name, its email domain, and the spellings other systems use for it.
COMPANIES = (
    ("Acme Corporation", "acme.com", ("Acme Corp", "ACME Corporation", "Acme", "Acme Corp.")),
    ("Globex Inc.", "globex.com", ("Globex", "GLOBEX INC", "Globex Incorporated")),
    ("Initech LLC", "initech.com", ("Initech", "INITECH", "Initech L.L.C.")),
    ("Umbrella Corporation", "umbrella-corp.com", ("Umbrella Corp", "Umbrella", "UMBRELLA CORP.")),
    ("Hooli", "hooli.xyz", ("Hooli Inc", "HOOLI", "Hooli, Inc.")),
    ("Vandelay Industries", "vandelay.com", ("Vandelay", "Vandelay Ind.", "VANDELAY INDUSTRIES")),
    ("Wonka Industries", "wonka.com", ("Wonka", "Wonka Ind", "WONKA INDUSTRIES")),
    ("Tyrell Corporation", "tyrell.com", ("Tyrell Corp", "Tyrell", "TYRELL CORP")),
    ("Cyberdyne Systems", "cyberdyne.com", ("Cyberdyne", "Cyberdyne Sys.", "CYBERDYNE SYSTEMS")),
    ("Massive Dynamic", "massivedynamic.com", ("Massive Dynamic Inc", "MASSIVE DYNAMIC", "Massive Dyn.")),
    ("Pied Piper", "piedpiper.com", ("Pied Piper Inc.", "PiedPiper", "PIED PIPER")),
    ("Dunder Mifflin", "dundermifflin.com", ("Dunder Mifflin Paper", "Dunder-Mifflin", "DUNDER MIFFLIN")),
    (
        "Mueller Logistik GmbH",
        "mueller-logistik.de",
        ("Mueller Logistik", "Müller Logistik GmbH", "MUELLER LOGISTIK"),
    ),
    (
        "Schneider Maschinenbau AG",
        "schneider-mb.de",
        ("Schneider Maschinenbau", "Schneider MB AG", "SCHNEIDER AG"),
    ),
    ("Nordlicht Software GmbH", "nordlicht.io", ("Nordlicht Software", "Nordlicht", "NORDLICHT GMBH")),
    (
        "Bergmann & Soehne KG",
        "bergmann-soehne.de",
        ("Bergmann und Soehne", "Bergmann & Söhne", "Bergmann KG"),
    ),
)

TITLES = ("Head of Marketing", "CRM Manager", "Data Analyst", "CTO", "Founder", "Buyer", "Office Manager",
          "Sales Director", "Product Manager", "Operations Lead")  # fmt: skip

CITIES_DE = ("Berlin", "Muenchen", "Hamburg", "Koeln", "Frankfurt", "Stuttgart", "Leipzig", "Dresden")
CITIES_US = ("New York", "San Francisco", "Chicago", "Boston", "Seattle", "Denver", "Austin", "Atlanta")

# Area codes (without trunk prefix) that phonenumbers accepts as real numbering areas.
AREA_CODES_DE = ("30", "89", "40", "221", "69", "711", "151", "160", "170", "171", "176")
AREA_CODES_US = ("212", "415", "312", "617", "206", "303", "512", "404")

# product id, sku, name, category, price in cents
PRODUCTS = (
    ("prd_1001", "SKU-1001-BLK", "Trail Running Shoe", "shoes", 12999),
    ("prd_1002", "SKU-1002-WHT", "City Sneaker", "shoes", 8999),
    ("prd_1003", "SKU-1003-GRN", "Hiking Boot", "shoes", 17999),
    ("prd_2001", "SKU-2001-S", "Merino T-Shirt", "apparel", 4999),
    ("prd_2002", "SKU-2002-M", "Rain Jacket", "apparel", 14999),
    ("prd_2003", "SKU-2003-L", "Fleece Hoodie", "apparel", 6999),
    ("prd_2004", "SKU-2004-M", "Running Shorts", "apparel", 3499),
    ("prd_3001", "SKU-3001", "Daypack 20L", "bags", 7999),
    ("prd_3002", "SKU-3002", "Travel Duffel 40L", "bags", 11999),
    ("prd_4001", "SKU-4001", "Insulated Bottle", "accessories", 2499),
    ("prd_4002", "SKU-4002", "Running Socks 3-Pack", "accessories", 1799),
    ("prd_4003", "SKU-4003", "Headlamp", "accessories", 3999),
    ("prd_4004", "SKU-4004", "Sunglasses", "accessories", 5999),
    ("prd_5001", "SKU-5001", "GPS Watch", "electronics", 29999),
    ("prd_5002", "SKU-5002", "Wireless Earbuds", "electronics", 9999),
    ("prd_6001", "SKU-6001", "Gift Card 25", "gift_cards", 2500),
)

# path, title, category, page name
PAGES = (
    ("/", "Home", "home", "Home"),
    ("/pricing", "Pricing", "marketing", "Pricing"),
    ("/blog/trail-running-guide", "Trail running for beginners", "blog", "Blog Post"),
    ("/blog/packing-list", "The ultimate packing list", "blog", "Blog Post"),
    ("/collections/shoes", "Shoes", "collection", "Collection"),
    ("/collections/apparel", "Apparel", "collection", "Collection"),
    ("/cart", "Your cart", "checkout", "Cart"),
    ("/account", "Your account", "account", "Account"),
    ("/help", "Help centre", "support", "Help"),
    ("/search", "Search results", "search", "Search"),
)

SITE = "https://shop.patron.example"
REFERRERS = ("https://www.google.com/", "https://www.bing.com/", "https://news.ycombinator.com/",
             "https://t.co/", "https://www.instagram.com/", "https://duckduckgo.com/")  # fmt: skip

# utm campaign, source, medium
CAMPAIGNS = (
    ("spring_sale", "newsletter", "email"),
    ("brand_search", "google", "cpc"),
    ("trail_launch", "instagram", "social"),
    ("retargeting", "facebook", "paid_social"),
)

USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
)
APP_USER_AGENTS = ("PatronShop/4.2.1 (iOS 17.4)", "PatronShop/4.2.0 (Android 14)")

FEATURES = ("wishlist.add", "size_guide.open", "reviews.write", "store_locator.search", "export_orders",
            "gift_wrap.select", "newsletter.preferences")  # fmt: skip
LOGIN_METHODS = ("password", "google", "apple", "magic_link")

COUPONS = ("WELCOME10", "SPRING15", "VIP20")
REFUND_REASONS = ("damaged", "wrong_size", "not_as_described", "late_delivery", "changed_mind")

TICKET_SUBJECTS = ("Where is my order?", "Return label request", "Wrong size delivered", "Payment declined",
                   "Cannot log in", "Cancel my subscription", "Invoice needed", "Product question")  # fmt: skip
TICKET_CATEGORIES = ("shipping", "returns", "returns", "billing", "account", "billing", "billing", "product")
TICKET_PRIORITIES = ("low", "normal", "high", "urgent")
TICKET_CHANNELS = ("email", "chat", "phone", "web", "social")
RESOLUTIONS = ("solved", "refunded", "replaced", "no_response", "duplicate")
AGENTS = ("agent_anja", "agent_ben", "agent_carla", "agent_deniz", "agent_eve", "agent_farid")

COMMENTS_LOW = ('Delivery took "forever", never again', "Support never answered, very disappointing",
                "Shoes fell apart after a month")  # fmt: skip
COMMENTS_MID = ("Okay, but shipping could be faster", "Decent quality, a bit pricey")
COMMENTS_HIGH = ('Great shoes, "best purchase" this year!', "Fast delivery, friendly support",
                 "Love the app, easy checkout")  # fmt: skip

EMAIL_CAMPAIGNS = ("Spring sale: 20% off trail gear", "New arrivals for your next hike",
                   "Your weekly running tips", "Last chance: free shipping ends tonight",
                   "We miss you - here is 10% off")  # fmt: skip
EMAIL_LISTS = ("newsletter", "product_updates", "promotions")
UNSUBSCRIBE_REASONS = ("too_many_emails", "not_relevant", "never_signed_up", "other")

PLANS = (("basic", 900), ("plus", 1900), ("pro", 4900))  # plan, monthly price in cents
FAILURE_CODES = (("card_declined", "The card was declined."), ("expired_card", "The card has expired."),
                 ("insufficient_funds", "The card has insufficient funds."))  # fmt: skip
CANCEL_REASONS = ("too_expensive", "missing_features", "switched_service", "unused", "other")

LEAD_SOURCES = ("webinar", "website", "referral", "trade_show", "paid_search")
LEAD_STAGES = ("new", "mql", "sql")
LOST_REASONS = ("price", "timing", "competitor", "no_budget")

CONSENT_PURPOSES = ("marketing", "analytics", "personalisation")
CONSENT_CHANNELS = ("email", "sms", "push", "all")
CONSENT_METHODS = ("cookie_banner", "signup_form", "preference_center", "unsubscribe_link")
POLICY_VERSIONS = ("2025-03", "2025-11")
