"""The toy-math tokenizer: one token per template word, one token per digit.

Word-level tokens keep sequences short (fast training on CPU); single-digit tokens make the
model do arithmetic digit by digit instead of memorising number tokens. Tokens carry their
leading space (" apples", " 7"), so decoding is plain concatenation and
`decode(encode(text)) == text` for any text built from the task vocabulary.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

BOS, EOS, PAD, UNK = "<bos>", "<eos>", "<pad>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
# a piece is: "####", a word, ONE digit, one other symbol (each optionally after one space),
# or a lone whitespace character (newline, or a space not followed by a word)
PIECE = r" ?####| ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]|\s"


def pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Split(Regex(PIECE), behavior="isolated")


def pieces(text: str) -> list[str]:
    return [piece for piece, _ in pre_tokenizer().pre_tokenize_str(text)]


def base_vocabulary() -> list[str]:
    """Digits and printable ASCII symbols with and without a leading space, plus whitespace."""
    symbols = [chr(c) for c in range(33, 127) if not chr(c).isalnum()]
    singles = [str(d) for d in range(10)] + symbols + ["####"]
    return singles + [" " + s for s in singles] + ["\n", " "]


def build_vocabulary(texts) -> list[str]:
    """Special tokens, the base vocabulary, then every word piece found in `texts` (sorted)."""
    vocab = list(SPECIAL_TOKENS) + base_vocabulary()
    seen = set(vocab)
    found = sorted({p for text in texts for p in pieces(text)} - seen)
    return vocab + found


def build_tokenizer(vocab: list[str]) -> Tokenizer:
    tok = Tokenizer(models.WordLevel({piece: i for i, piece in enumerate(vocab)}, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizer()
    tok.decoder = decoders.Fuse()  # pieces already carry their spaces: just concatenate
    bos_id = vocab.index(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    return tok


def save_hf_tokenizer(tok: Tokenizer, folder: str | Path):
    """Save as a Hugging Face fast tokenizer that `AutoTokenizer.from_pretrained(folder)` loads."""
    from transformers import PreTrainedTokenizerFast  # heavy: the tokenizer itself needs only `tokenizers`

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,  # spaces are part of the tokens; never "tidy" them
        model_max_length=1024,
    )
    hf.save_pretrained(str(folder))
    return hf
