"""Vocabularies of the synthetic world: the 34 categories, colour families, patterns, titles, ASR.

Everything here is data plus two small text generators (:func:`make_title`, :func:`make_asr`)
driven by a caller's ``numpy.random.Generator``, so the world stays deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Category",
    "CATEGORIES",
    "COLOUR_FAMILIES",
    "PATTERNS",
    "PATTERN_WORDS",
    "LOGOS",
    "make_title",
    "make_asr",
]


@dataclass(frozen=True)
class Category:
    """A product category: its id, name, the shape families drawing it and its title words."""

    category_id: int
    name: str
    families: tuple[str, ...]
    nouns: tuple[str, ...]
    attributes: tuple[str, ...]
    units: tuple[str, ...]


def _c(cid: int, name: str, families: str, nouns: str, attributes: str, units: str) -> Category:
    return Category(cid, name, tuple(families.split()), tuple(nouns.split(",")), tuple(attributes.split(",")),
                    tuple(units.split(",")))


#: The 34 categories (LPR4M has 34); ids are 0-based and stable.
CATEGORIES: tuple[Category, ...] = (
    _c(0, "women's clothing", "tshirt dress", "blouse,dress,top,shirt,cardigan", "slim fit,loose,chiffon,cotton,ruffled,v-neck", "S,M,L,XL"),
    _c(1, "men's clothing", "tshirt trousers", "t-shirt,shirt,polo,jacket,trousers", "regular fit,cotton,linen,casual,business", "M,L,XL,XXL"),
    _c(2, "underwear", "tshirt pillow", "bra,briefs,vest,pyjamas,socks", "seamless,breathable,modal,soft,lace", "S,M,L"),
    _c(3, "children's clothing", "tshirt dress", "kids tee,romper,baby dress,hoodie,kids set", "cartoon,pure cotton,warm,cute,soft", "90cm,100cm,110cm,120cm"),
    _c(4, "sportswear", "tshirt trousers", "running tee,yoga pants,track jacket,leggings,shorts", "quick dry,stretch,breathable,training,light", "S,M,L,XL"),
    _c(5, "shoes", "shoe", "sneakers,loafers,boots,sandals,running shoes", "non-slip,leather,breathable,light,cushioned", "37,38,39,40,41,42"),
    _c(6, "bags", "handbag", "handbag,tote,crossbody bag,backpack,clutch", "leather,large capacity,mini,canvas,chain strap", "one size"),
    _c(7, "jewellery", "jewel", "necklace,pendant,ring,bracelet,earrings", "sterling silver,gold plated,pearl,crystal,dainty", "one size"),
    _c(8, "watches", "watch", "watch,smart watch,quartz watch,sports watch,dress watch", "waterproof,steel strap,leather strap,luminous,minimalist", "38mm,42mm"),
    _c(9, "accessories", "glasses hat", "sunglasses,cap,bucket hat,glasses,beret", "polarized,uv protection,retro,adjustable,unisex", "one size"),
    _c(10, "cosmetics", "lipstick bottle", "lipstick,lip gloss,foundation,mascara,eyeliner", "matte,long lasting,moisturising,velvet,waterproof", "3.5g,30ml"),
    _c(11, "skincare", "jar bottle", "face cream,serum,toner,eye cream,sunscreen", "hydrating,repair,brightening,gentle,anti-ageing", "30ml,50ml,100ml"),
    _c(12, "perfume", "bottle", "eau de parfum,perfume,body mist,cologne,fragrance", "floral,woody,fresh,long lasting,citrus", "30ml,50ml,100ml"),
    _c(13, "hair care", "bottle spray", "shampoo,conditioner,hair oil,hair mask,styling spray", "anti-dandruff,smoothing,repair,volumising,silky", "300ml,500ml"),
    _c(14, "food", "box can", "instant noodles,biscuits,cereal,rice crackers,dumplings", "family pack,crispy,spicy,low fat,handmade", "500g,1kg,12 packs"),
    _c(15, "snacks", "pouch box", "nuts,dried fruit,chips,jerky,candy", "mixed,roasted,sweet,salty,daily pack", "250g,500g,30 bags"),
    _c(16, "beverages", "can bottle", "soda,juice,milk tea,sparkling water,coffee drink", "sugar free,chilled,fruity,refreshing,case of 24", "330ml,500ml,24 cans"),
    _c(17, "fresh produce", "ball pouch", "apples,oranges,mangoes,kiwis,cherries", "fresh picked,juicy,organic,sweet,premium", "2.5kg,5kg"),
    _c(18, "tea and coffee", "jar box", "green tea,black tea,coffee beans,instant coffee,oolong", "fragrant,single origin,aged,gift box,loose leaf", "100g,250g,500g"),
    _c(19, "health supplements", "bottle jar", "vitamin c,fish oil,protein powder,probiotics,collagen", "chewable,high potency,daily,natural,sugar free", "60 tabs,120 caps,1kg"),
    _c(20, "mother and baby", "bottle pillow", "baby bottle,diapers,baby wipes,teether,baby lotion", "bpa free,gentle,anti-colic,soft,newborn", "150ml,240ml,S,M"),
    _c(21, "toys", "bear ball", "plush bear,building blocks,toy car,doll,puzzle", "educational,soft,gift,cute,safe", "one size"),
    _c(22, "books", "book", "novel,picture book,cookbook,textbook,notebook", "bestseller,hardcover,illustrated,new edition,classic", "one volume"),
    _c(23, "stationery", "book lipstick", "notebook,gel pen,marker set,pencil case,planner", "smooth,colourful,a5,portable,student", "one set"),
    _c(24, "electronics", "phone", "phone,tablet,earbuds case,power bank,e-reader", "fast charging,5g,long battery,hd screen,slim", "128gb,256gb"),
    _c(25, "home appliances", "appliance", "rice cooker,air fryer,kettle,blender,humidifier", "smart,large capacity,quiet,non-stick,energy saving", "3l,5l"),
    _c(26, "kitchenware", "pot jar", "frying pan,stock pot,storage jar,wok,lunch box", "non-stick,stainless,induction ready,sealed,ceramic", "24cm,28cm,1l"),
    _c(27, "home textiles", "pillow", "pillow,blanket,cushion,bedding set,towel", "soft,washable,cooling,thick,cotton", "45x45cm,queen size"),
    _c(28, "furniture", "chair box", "chair,stool,side table,shelf,storage box", "solid wood,foldable,nordic,sturdy,compact", "one piece"),
    _c(29, "home decor", "vase", "vase,plant pot,candle,photo frame,lamp", "nordic,ceramic,handmade,minimal,glass", "one piece"),
    _c(30, "cleaning products", "spray bottle", "cleaner spray,detergent,dish soap,disinfectant,softener", "lemon scent,deep clean,gentle,concentrated,refill", "500ml,2l"),
    _c(31, "pet supplies", "pouch ball", "dog food,cat litter,pet treats,pet toy,cat food", "grain free,natural,for puppies,chicken flavour,clumping", "1.5kg,5kg"),
    _c(32, "sports and outdoor", "ball bottle", "basketball,football,water bottle,yoga ball,tent bag", "professional,durable,insulated,outdoor,lightweight", "size 5,750ml"),
    _c(33, "luggage", "suitcase", "suitcase,carry-on,trolley case,travel bag,trunk", "spinner wheels,tsa lock,expandable,hard shell,silent", "20in,24in,28in"),
)

#: Colour families: name -> (hue in [0,1) or None for neutrals, saturation, value, words).
COLOUR_FAMILIES: dict[str, tuple[float | None, float, float, tuple[str, ...]]] = {
    "red": (0.00, 0.80, 0.80, ("red", "crimson", "wine red", "cherry")),
    "orange": (0.07, 0.85, 0.90, ("orange", "tangerine", "coral")),
    "yellow": (0.14, 0.80, 0.92, ("yellow", "lemon", "mustard")),
    "green": (0.33, 0.65, 0.65, ("green", "olive", "mint green", "forest green")),
    "teal": (0.48, 0.70, 0.65, ("teal", "turquoise", "aqua")),
    "blue": (0.60, 0.75, 0.75, ("blue", "navy", "sky blue", "royal blue")),
    "purple": (0.76, 0.55, 0.65, ("purple", "lavender", "violet")),
    "pink": (0.93, 0.45, 0.92, ("pink", "rose", "blush")),
    "brown": (0.07, 0.60, 0.45, ("brown", "coffee", "camel", "chocolate")),
    "black": (None, 0.0, 0.13, ("black", "jet black", "charcoal")),
    "white": (None, 0.0, 0.93, ("white", "ivory", "cream white")),
    "grey": (None, 0.0, 0.55, ("grey", "silver grey", "ash")),
    "beige": (0.10, 0.25, 0.85, ("beige", "khaki", "oatmeal", "apricot")),
}

#: Surface patterns of a product's body.
PATTERNS: tuple[str, ...] = ("plain", "stripes", "dots", "checker", "gradient", "zigzag", "floral", "bands")
PATTERN_WORDS: dict[str, tuple[str, ...]] = {
    "plain": ("classic", "solid", "basic", "pure colour"),
    "stripes": ("striped", "pinstripe", "stripe"),
    "dots": ("polka dot", "dotted", "spotted"),
    "checker": ("plaid", "checked", "gingham"),
    "gradient": ("gradient", "ombre", "two-tone"),
    "zigzag": ("chevron", "zigzag", "wave print"),
    "floral": ("floral", "flower print", "printed"),
    "bands": ("colour block", "banded", "panelled"),
}

#: Logo glyphs printed on products.
LOGOS: tuple[str, ...] = ("none", "circle", "square", "triangle", "star", "diamond", "ring", "cross", "bars")

_BRAND_A = ("lu", "ka", "mi", "zen", "vo", "ri", "sa", "to", "el", "no", "pa", "xi", "qi", "ha", "mo", "yu")
_BRAND_B = ("na", "ra", "ko", "lia", "mei", "ton", "vi", "ssa", "ro", "fa", "dan", "lin")
_SUFFIXES = ("new arrival", "2022 new", "limited edition", "best seller", "official store", "free shipping",
             "gift", "hot sale", "live exclusive", "promotion")
_GREETINGS = ("hello everyone", "welcome to the live room", "hi babies", "good evening friends",
              "new friends please follow", "thanks for coming")
_FILLERS = ("you see", "look at this", "let me show you", "okay", "right", "really", "so", "and then",
            "this one", "very nice", "trust me", "come on", "quickly", "yes", "no problem", "everybody")
_CALLS = ("add to cart now", "link number {n}", "only {p} yuan today", "buy two get one free",
          "limited stock", "last {n} pieces", "click the yellow cart", "coupon in the top left",
          "ships within 48 hours", "seven day return")


def brand_name(rng: np.random.Generator) -> str:
    """A made-up brand name such as ``Kalia``."""
    return (str(rng.choice(_BRAND_A)) + str(rng.choice(_BRAND_B))).capitalize()


def make_title(rng: np.random.Generator, category: Category, brand: str, colour_family: str, pattern: str) -> str:
    """A shop image title built from the product's real attributes plus marketing noise."""
    colour = str(rng.choice(COLOUR_FAMILIES[colour_family][3]))
    words = [brand]
    if rng.random() < 0.6:
        words.append(str(rng.choice(_SUFFIXES)))
    words += [colour, str(rng.choice(PATTERN_WORDS[pattern])), str(rng.choice(category.attributes)),
              str(rng.choice(category.nouns))]
    if rng.random() < 0.5:
        words.append(str(rng.choice(category.units)))
    return " ".join(words)


def make_asr(rng: np.random.Generator, category: Category, colour_family: str, pattern: str) -> str:
    """A noisy speech transcript of the presenter talking about a product.

    The product's colour, pattern and noun are mentioned only sometimes, and a few words are
    replaced by random ones (recognition errors), so ASR is a weak cue, as in LPR4M.
    """
    out: list[str] = []
    if rng.random() < 0.5:
        out.append(str(rng.choice(_GREETINGS)))
    n_parts = int(rng.integers(3, 7))
    for _ in range(n_parts):
        r = rng.random()
        if r < 0.35:
            bits = ["this"]
            if rng.random() < 0.6:
                bits.append(str(rng.choice(COLOUR_FAMILIES[colour_family][3])))
            if rng.random() < 0.4:
                bits.append(str(rng.choice(PATTERN_WORDS[pattern])))
            bits.append(str(rng.choice(category.nouns)))
            out.append(" ".join(bits))
        elif r < 0.55:
            out.append(str(rng.choice(category.attributes)))
        elif r < 0.75:
            call = str(rng.choice(_CALLS))
            out.append(call.format(n=int(rng.integers(1, 60)), p=int(rng.integers(9, 500))))
        else:
            out.append(str(rng.choice(_FILLERS)))
    words = " ".join(out).split()
    vocab = _FILLERS + tuple(n for c in CATEGORIES for n in c.nouns)
    for i in range(len(words)):
        if rng.random() < 0.06:
            words[i] = str(rng.choice(vocab)).split()[0]
    return " ".join(words)
