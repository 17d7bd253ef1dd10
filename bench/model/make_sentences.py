#!/usr/bin/env python3
"""Writes the sentence sets of the local-model test and benchmark (deterministic; committed).

  tests/model/sentences.txt   200 sentences of every shape a rationale takes: short and long
                              (beyond 256 tokens, so truncation is checked), numbers, tickers,
                              punctuation, accents, upper case, CJK and emoji, stray whitespace
  bench/model/finance_1000.txt  1,000 short finance sentences (the benchmark's workload)

usage: python3 bench/model/make_sentences.py   (from the project's root)
"""
import random

rng = random.Random(20261128)
tickers = ["AAPL", "MSFT", "NVDA", "TSLA", "JPM", "XOM", "BRK.B", "SPY", "QQQ", "EURUSD", "BTC-USD", "GLD", "TLT", "ES=F"]
verbs = ["breaks out above", "falls below", "tests", "rejects", "holds", "reclaims", "gaps over", "fades from"]
levels = ["its 200-day moving average", "the prior swing high", "VWAP", "the opening range", "a multi-year trendline",
          "the 50-day EMA", "last quarter's low", "the upper Bollinger band"]
reasons = ["on heavy volume", "after a strong earnings beat", "as yields rise", "while breadth narrows",
           "with implied volatility elevated", "ahead of the FOMC decision", "despite a weak dollar",
           "as momentum diverges", "after guidance was cut", "on short covering"]
actions = ["go long", "trim the position", "hedge with puts", "stay flat", "add on a pullback", "take profits",
           "reduce gross exposure", "rotate into defensives"]
oddities = ["Ünïcödé café résumé naïve", "日本株は上昇した", "rocket 🚀 to the moon", "  leading and trailing spaces  ",
            "TAB\tseparated\tfields", "ALL CAPS SHOUTING ABOUT RISK", "semi;colons, commas: and-dashes (parens) [brackets]",
            "numbers 3.14159 -2.5e-3 1,000,000 42%", "e-mail quant@example.com and url https://example.com/x?y=1",
            "Straße Ærø Œuvre Ñandú", "don't won't can't it's", "x" * 300]


def sentence():
    t = rng.choice(tickers)
    s = f"{t} {rng.choice(verbs)} {rng.choice(levels)} {rng.choice(reasons)}; {rng.choice(actions)}."
    return s


def long_sentence():
    return " ".join(sentence() for _ in range(rng.randint(12, 20)))


tests = []
for i in range(200):
    if i % 25 == 0:
        tests.append(long_sentence())
    elif i % 10 == 3:
        tests.append(rng.choice(oddities) + " " + sentence())
    elif i % 10 == 7:
        tests.append(rng.choice(tickers))
    else:
        tests.append(sentence())
with open("tests/model/sentences.txt", "w") as f:
    for s in tests:
        f.write(s.replace("\n", " ") + "\n")
with open("bench/model/finance_1000.txt", "w") as f:
    for _ in range(1000):
        f.write(sentence() + "\n")
