"""The Faker locales the corpus draws phone numbers, IBANs and template fillers from."""

from __future__ import annotations

# (locale, country calling code, trunk prefix dropped in international form)
PHONE_LOCALES = (
    ("en_US", "1", "1"),
    ("en_CA", "1", "1"),
    ("en_GB", "44", "0"),
    ("en_AU", "61", "0"),
    ("en_NZ", "64", "0"),
    ("de_DE", "49", "0"),
    ("de_AT", "43", "0"),
    ("de_CH", "41", "0"),
    ("fr_FR", "33", "0"),
    ("fr_CH", "41", "0"),
    ("es_ES", "34", ""),
    ("it_IT", "39", ""),
    ("nl_NL", "31", "0"),
    ("nl_BE", "32", "0"),
    ("pt_BR", "55", "0"),
    ("pt_PT", "351", ""),
    ("pl_PL", "48", ""),
    ("sv_SE", "46", "0"),
    ("no_NO", "47", ""),
    ("da_DK", "45", ""),
    ("fi_FI", "358", "0"),
    ("cs_CZ", "420", ""),
    ("sk_SK", "421", "0"),
    ("ja_JP", "81", "0"),
    ("ko_KR", "82", "0"),
    ("zh_CN", "86", "0"),
    ("hi_IN", "91", "0"),
    ("ru_RU", "7", "8"),
    ("el_GR", "30", ""),
    ("ro_RO", "40", "0"),
    ("es_MX", "52", ""),
    ("he_IL", "972", "0"),
)
IBAN_LOCALES = (
    "en_GB",
    "de_DE",
    "fr_FR",
    "es_ES",
    "it_IT",
    "nl_NL",
    "pt_PT",
    "pl_PL",
    "de_AT",
    "de_CH",
    "da_DK",
    "fi_FI",
    "cs_CZ",
    "el_GR",
)


# it_IT is left out: its city() draws from a set, so its order follows PYTHONHASHSEED
TEXT_LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "pl_PL", "nl_NL", "pt_BR", "en_AU")
