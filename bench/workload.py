"""A fixed, seeded, multilingual workload with a realistic length mix.

- 70 % short queries (about 6-30 tokens): questions and search phrases;
- 25 % passages of a few hundred tokens (150-400);
- 5 % long documents of 1-2k tokens (capped at the model's own limit: e5-small takes 510
  content tokens, so there a "long document" is as long as the model allows).

Text is composed from hand-written sentences in 12 languages (Latin, Cyrillic, Arabic,
Devanagari and CJK scripts), with seeded numbers and names spliced in so that no two items are
equal. Every length is measured with the served model's own tokenizer (`tokenizer.json`), and
the token counts include the special tokens (`<s>` ... `</s>`): that is what the model computes.
The same seed and model always give the same texts in the same order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from appliance.spec.modelinfo import inspect_model_folder
from appliance.spec.tokenizer import load_tokenizer

SHORT, PASSAGE, LONG = "short", "passage", "long"
MIX = ((SHORT, 0.70, (6, 30)), (PASSAGE, 0.25, (150, 400)), (LONG, 0.05, (1000, 2000)))

QUERIES: dict[str, list[str]] = {
    "en": ["what is the capital of {place}", "how many people live in {place}",
           "best way to learn {topic}", "why does {topic} matter for small companies",
           "{topic} vs {topic2} differences", "when was {name} born", "cheap flights to {place} in {month}",
           "how to reset my password", "symptoms of vitamin d deficiency", "is {topic} hard to learn"],
    "de": ["wie viele Einwohner hat {place}", "was kostet eine Bahnfahrt nach {place}",
           "beste Methode um {topic} zu lernen", "wann wurde {name} geboren", "Wetter morgen in {place}"],
    "fr": ["quelle est la capitale de {place}", "comment apprendre {topic} rapidement",
           "horaires des trains pour {place}", "qui est {name}", "meilleur restaurant près de {place}"],
    "es": ["cuál es la capital de {place}", "cómo aprender {topic} desde cero",
           "vuelos baratos a {place} en {month}", "quién fue {name}", "receta fácil de tortilla de patatas"],
    "it": ["qual è la capitale di {place}", "come imparare {topic} velocemente", "chi era {name}"],
    "pt": ["qual é a capital de {place}", "como aprender {topic} sozinho", "previsão do tempo em {place}"],
    "ru": ["какая столица у {place}", "как быстро выучить {topic}", "кто такой {name}",
           "погода в {place} на завтра"],
    "zh": ["{place}的首都是哪里", "如何快速学习{topic}", "{name}是谁", "明天{place}的天气怎么样"],
    "ja": ["{place}の首都はどこですか", "{topic}を早く学ぶ方法", "{name}について教えて"],
    "ko": ["{place}의 수도는 어디인가요", "{topic}를 빨리 배우는 방법"],
    "ar": ["ما هي عاصمة {place}", "كيف أتعلم {topic} بسرعة"],
    "hi": ["{place} की राजधानी क्या है", "{topic} जल्दी कैसे सीखें"],
}

SENTENCES: dict[str, list[str]] = {
    "en": [
        "The city of {place} has grown steadily since {year}, when the new railway line opened.",
        "Researchers at the university found that {topic} improves results by {pct} percent in most trials.",
        "{name} described the project as a turning point for the whole region.",
        "Water boils at one hundred degrees Celsius at sea level, but at lower temperatures in the mountains.",
        "The committee will publish its final report on {topic} in {month}.",
        "Most customers asked for faster delivery, clearer prices and a simpler return policy.",
        "In {year} the company moved its headquarters to {place} and hired {num} new engineers.",
        "A self-hosted embedding server turns text into vectors so that similar documents end up close together.",
        "The museum's collection includes more than {num} paintings, sculptures and rare manuscripts.",
        "Heavy rain is expected tomorrow morning, followed by a dry and sunny afternoon.",
    ],
    "de": [
        "Die Stadt {place} ist seit {year} stark gewachsen, vor allem wegen der neuen Bahnstrecke.",
        "Der schnelle braune Fuchs springt über den faulen Hund, der im Schatten schläft.",
        "{name} bezeichnete das Projekt als Wendepunkt für die gesamte Region.",
        "Nach Angaben der Behörde wurden im letzten Jahr {num} neue Wohnungen gebaut.",
        "Die Ergebnisse zeigen, dass {topic} die Qualität um {pct} Prozent verbessert.",
        "Am Wochenende bleibt es trocken, erst ab Montag ziehen wieder Wolken auf.",
    ],
    "fr": [
        "La ville de {place} s'est fortement développée depuis {year}, grâce à la nouvelle ligne de train.",
        "{name} a présenté le projet comme un tournant pour toute la région.",
        "Selon l'étude, {topic} améliore les résultats de {pct} pour cent dans la plupart des cas.",
        "Le musée possède plus de {num} tableaux, sculptures et manuscrits anciens.",
        "Il pleuvra demain matin, puis le soleil reviendra dans l'après-midi.",
    ],
    "es": [
        "La ciudad de {place} ha crecido mucho desde {year}, cuando se inauguró la nueva línea de tren.",
        "¿Dónde está la biblioteca? Mañana vamos a la playa con nuestros amigos.",
        "{name} describió el proyecto como un punto de inflexión para toda la región.",
        "Según el informe, {topic} mejora los resultados en un {pct} por ciento.",
        "El museo tiene más de {num} pinturas, esculturas y manuscritos antiguos.",
    ],
    "it": [
        "La città di {place} è cresciuta molto dal {year}, quando è stata aperta la nuova ferrovia.",
        "{name} ha definito il progetto una svolta per tutta la regione.",
        "Secondo lo studio, {topic} migliora i risultati del {pct} per cento.",
    ],
    "pt": [
        "A cidade de {place} cresceu muito desde {year}, quando a nova linha de trem foi inaugurada.",
        "{name} descreveu o projeto como um marco para toda a região.",
        "Segundo o relatório, {topic} melhora os resultados em {pct} por cento.",
    ],
    "ru": [
        "Город {place} быстро растёт с {year} года, когда открылась новая железная дорога.",
        "{name} назвал проект поворотным моментом для всего региона.",
        "По данным исследования, {topic} улучшает результаты на {pct} процентов.",
        "В музее хранится более {num} картин, скульптур и старинных рукописей.",
    ],
    "zh": [
        "自{year}年新铁路开通以来，{place}的人口一直在稳步增长。",
        "{name}认为这个项目是整个地区的转折点。",
        "研究表明，{topic}可以将结果提高百分之{pct}。",
        "博物馆收藏了{num}多件绘画、雕塑和珍贵手稿。",
        "明天上午有大雨，下午转晴。",
    ],
    "ja": [
        "{year}年に新しい鉄道が開通して以来、{place}の人口は着実に増えている。",
        "{name}はこのプロジェクトを地域全体の転換点だと述べた。",
        "研究によると、{topic}は結果を{pct}パーセント改善する。",
    ],
    "ko": [
        "{year}년 새 철도가 개통된 이후 {place}의 인구는 꾸준히 증가했다.",
        "{name}은 이 프로젝트를 지역 전체의 전환점이라고 말했다.",
    ],
    "ar": [
        "نمت مدينة {place} بشكل كبير منذ عام {year} عندما افتتح خط السكك الحديدية الجديد.",
        "وصف {name} المشروع بأنه نقطة تحول للمنطقة بأكملها.",
    ],
    "hi": [
        "{year} में नई रेल लाइन खुलने के बाद से {place} की आबादी लगातार बढ़ी है।",
        "{name} ने इस परियोजना को पूरे क्षेत्र के लिए एक महत्वपूर्ण मोड़ बताया।",
    ],
}
# Roughly how much of real multilingual traffic each language is (English-heavy, long tail).
LANG_WEIGHTS = {"en": 30, "de": 10, "fr": 9, "es": 10, "it": 5, "pt": 5, "ru": 7, "zh": 9, "ja": 5,
                "ko": 3, "ar": 4, "hi": 3}
FILL = {
    "place": ["Paris", "Berlin", "Madrid", "Lisbon", "Tokyo", "Seoul", "Cairo", "Delhi", "Lima", "Oslo",
              "Nairobi", "Toronto", "Kraków", "São Paulo", "Hanoi"],
    "topic": ["machine learning", "Python", "photography", "statistics", "gardening", "cryptography",
              "piano", "accounting", "astronomy", "welding"],
    "name": ["Ada Lovelace", "Marie Curie", "Alan Turing", "Frida Kahlo", "Nelson Mandela",
             "Grace Hopper", "Leonardo da Vinci", "Rosalind Franklin"],
    "month": ["January", "March", "May", "July", "September", "November"],
}


@dataclass(frozen=True)
class Item:
    text: str
    tokens: int  # with the special tokens, as the model computes it
    kind: str
    lang: str


@dataclass(frozen=True)
class Workload:
    items: list[Item]
    seed: int
    max_tokens: int  # the model's content-token limit the long documents were capped at

    @property
    def texts(self) -> list[str]:
        return [i.text for i in self.items]

    @property
    def total_tokens(self) -> int:
        return sum(i.tokens for i in self.items)

    def requests(self, size: int) -> list[list[Item]]:
        """The items cut into consecutive requests of `size` inputs (the last may be smaller)."""
        return [self.items[i: i + size] for i in range(0, len(self.items), size)]

    def summary(self) -> dict[str, object]:
        kinds = {k: [i.tokens for i in self.items if i.kind == k] for k, _, _ in MIX}
        return {
            "seed": self.seed,
            "items": len(self.items),
            "total_tokens": self.total_tokens,
            "max_content_tokens": self.max_tokens,
            "languages": sorted({i.lang for i in self.items}),
            "mix": {
                k: {"count": len(v), "min_tokens": min(v, default=0), "max_tokens": max(v, default=0),
                    "mean_tokens": round(sum(v) / len(v), 1) if v else 0.0}
                for k, v in kinds.items()
            },
        }


def _fill(template: str, rng: random.Random) -> str:
    values = {k: rng.choice(v) for k, v in FILL.items()}
    values["topic2"] = rng.choice(FILL["topic"])
    values.update(year=str(rng.randint(1890, 2024)), pct=str(rng.randint(2, 60)),
                  num=f"{rng.randint(120, 98000):,}")
    return template.format(**values)


def build_workload(model_dir: Path, n_items: int, *, seed: int = 20261125, max_tokens: int | None = None,
                   mix: Sequence[tuple[str, float, tuple[int, int]]] = MIX) -> Workload:
    """`n_items` texts in a seeded shuffled order; lengths measured with `model_dir`'s tokenizer.

    `max_tokens` (content tokens, without `<s>` `</s>`) defaults to the model's own limit.
    """
    tokenizer = load_tokenizer(model_dir / "tokenizer.json")
    specials = len(tokenizer.encode("").ids)
    limit = max_tokens if max_tokens is not None else model_content_limit(model_dir, specials)
    rng = random.Random(seed)
    langs, weights = zip(*LANG_WEIGHTS.items())
    counts = _counts(n_items, mix)
    items: list[Item] = []
    for (kind, _, (low, high)), count in zip(mix, counts):
        for _ in range(count):
            lang = rng.choices(langs, weights)[0]
            target = min(rng.randint(low, high), limit) + specials
            items.append(_compose(kind, lang, target, limit + specials, rng, tokenizer))
    rng.shuffle(items)
    return Workload(items=items, seed=seed, max_tokens=limit)


def _counts(n: int, mix: Sequence[tuple[str, float, tuple[int, int]]]) -> list[int]:
    counts = [max(1 if share >= 0.05 and n >= 8 else 0, round(n * share)) for _, share, _ in mix]
    counts[0] += n - sum(counts)
    return counts


def _compose(kind: str, lang: str, target: int, hard_cap: int, rng: random.Random, tok: Tokenizer) -> Item:
    if kind == SHORT:
        text = _fill(rng.choice(QUERIES[lang]), rng)
        # Some queries are longer: a question plus a clause of context.
        while len(tok.encode(text).ids) < target and rng.random() < 0.8:
            text = f"{text} {_fill(rng.choice(SENTENCES[lang]), rng)}"
        return _trim(text, kind, lang, max(target, 6), hard_cap, tok)
    parts: list[str] = []
    count = 0
    while count < target:
        sentence = _fill(rng.choice(SENTENCES[lang]), rng)
        parts.append(sentence)
        # A long document mixes in an English sentence now and then, as real documents do.
        if kind == LONG and rng.random() < 0.1:
            parts.append(_fill(rng.choice(SENTENCES["en"]), rng))
        count = len(tok.encode(" ".join(parts)).ids)
    return _trim(" ".join(parts), kind, lang, target, hard_cap, tok)


def _trim(text: str, kind: str, lang: str, target: int, hard_cap: int, tok: Tokenizer) -> Item:
    """Cut the text (at token boundaries, by character offsets) to at most `target` tokens."""
    encoding = tok.encode(text)
    cap = min(target, hard_cap)
    if len(encoding.ids) > cap:
        content_offsets = [o for o, special in zip(encoding.offsets, encoding.special_tokens_mask) if not special]
        keep = cap - (len(encoding.ids) - len(content_offsets))
        text = text[: content_offsets[keep - 1][1]].rstrip()
        encoding = tok.encode(text)
        while len(encoding.ids) > hard_cap:  # re-tokenizing can merge differently: shave until it fits
            text = text[:-1]
            encoding = tok.encode(text)
    return Item(text=text, tokens=len(encoding.ids), kind=kind, lang=lang)


def model_content_limit(model_dir: Path, specials: int) -> int:
    """Content tokens the appliance takes by default for this folder (its own rule, ModelInfo)."""
    return inspect_model_folder(model_dir, None).default_max_tokens(specials)
