"""Factories for ``gen-repo build benchmarks/corpus/zoo/hf_zoo.py:<name>``: HuggingFace
transformers architectures made from their configs with tiny sizes, random weights (seeded, so
every call makes the same ones). MODELS names each: its model type, the Auto class, its kind,
its inputs (named after forward()'s parameters) and config values beyond the tiny defaults."""

import torch

SEED = 0
VOCAB = 99
TEXT = "input_ids:int64:-1:3..99"
# Set on every config that has the attribute: a tiny model, pad/bos/eos inside the vocabulary.
TINY = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=2, intermediate_size=37, max_position_embeddings=128,
            head_dim=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            decoder_start_token_id=1, encoder_layers=2, decoder_layers=2, d_model=32,
            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=37,
            decoder_ffn_dim=37, d_ff=37, d_kv=16, num_layers=2, num_heads=2,
            num_decoder_layers=2, embedding_size=32, rotary_dim=16)
VISION = dict(image_size=32, patch_size=8, num_channels=3)
IMAGE = "pixel_values:float32:3,32,32"
AUDIO = "input_values:float32:-1"
NO_CACHE = dict(use_cache=False)

ENCODERS = ["bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2",
            "xlm-roberta", "mpnet", "convbert", "ernie", "megatron-bert", "roformer",
            "mobilebert", "esm", "data2vec-text", "xlm", "big_bird", "nystromformer"]
DECODERS = ["gpt2", "gpt_neo", "gptj", "gpt_neox", "opt", "bloom", "llama", "mistral", "qwen2",
            "qwen3", "phi", "gemma", "gemma2", "falcon", "codegen", "stablelm", "olmo",
            "starcoder2", "granite", "xglm", "biogpt", "gpt_bigcode"]
SEQ2SEQ = ["t5", "bart", "mbart", "pegasus", "m2m_100", "blenderbot-small", "mt5"]

MODELS = {}
for t in ENCODERS:
    MODELS[t.replace("-", "_")] = (t, "AutoModel", "encoder", (TEXT,), {})
MODELS["bert_masked"] = ("bert", "AutoModel", "encoder",
                         (TEXT, "attention_mask:int64:-1:0..2", "token_type_ids:int64:-1:0..2"),
                         {})
for t in DECODERS:
    MODELS[t] = (t, "AutoModelForCausalLM", "decoder", (TEXT,), NO_CACHE)
for t in ("gpt2", "llama"):  # as transformers makes them: use_cache=True
    MODELS[f"{t}_with_cache"] = (t, "AutoModelForCausalLM", "decoder with cache", (TEXT,), {})
for t in SEQ2SEQ:
    MODELS[t.replace("-", "_")] = (t, "AutoModel", "encoder-decoder",
                                   (TEXT, "decoder_input_ids:int64:-1:3..99"), NO_CACHE)
MODELS.update({
    "vit": ("vit", "AutoModel", "vision", (IMAGE,), VISION),
    "deit": ("deit", "AutoModel", "vision", (IMAGE,), VISION),
    "beit": ("beit", "AutoModel", "vision", (IMAGE,), VISION),
    "dinov2": ("dinov2", "AutoModel", "vision", (IMAGE,), VISION),
    "yolos": ("yolos", "AutoModel", "vision", ("pixel_values:float32:3,32,32",),
              dict(image_size=[32, 32], patch_size=8, num_detection_tokens=4)),
    "resnet": ("resnet", "AutoModel", "vision", (IMAGE,),
               dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], embedding_size=8)),
    "regnet": ("regnet", "AutoModel", "vision", (IMAGE,),
               dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], embedding_size=8,
                    groups_width=8)),
    "mobilenet_v2": ("mobilenet_v2", "AutoModel", "vision", (IMAGE,), dict(depth_multiplier=0.25)),
    "wav2vec2": ("wav2vec2", "AutoModel", "audio", (AUDIO,), {}),
    "hubert": ("hubert", "AutoModel", "audio", (AUDIO,), {}),
    "wavlm": ("wavlm", "AutoModel", "audio", (AUDIO,), {}),
    "data2vec_audio": ("data2vec-audio", "AutoModel", "audio", (AUDIO,), {}),
    "clip": ("clip", "AutoModel", "multimodal",
             (TEXT, "pixel_values:float32:3,32,32"),
             dict(text_config=dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=37,
                                   max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                                   eos_token_id=2),
                  vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=37, image_size=32, patch_size=8),
                  projection_dim=16)),
})
AUDIO_CONV = dict(conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3),
                  num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                  num_feat_extract_layers=2, hidden_size=32, num_hidden_layers=2,
                  num_attention_heads=2, intermediate_size=37, vocab_size=VOCAB,
                  pad_token_id=0)


def config(name: str):
    from transformers import AutoConfig

    model_type, _, kind, _, extra = MODELS[name]
    if model_type == "clip":
        return AutoConfig.for_model(model_type, **extra)
    cfg = AutoConfig.for_model(model_type)
    tiny = AUDIO_CONV if kind == "audio" else TINY
    for key, value in {**tiny, **extra}.items():
        if key in extra or hasattr(cfg, key):
            try:
                setattr(cfg, key, value)
            except AttributeError:  # a property derived from other values (falcon's head_dim)
                pass
    return cfg


def __getattr__(name: str):
    if name not in MODELS:
        raise AttributeError(name)

    def factory():
        import transformers

        torch.manual_seed(SEED)
        return getattr(transformers, MODELS[name][1]).from_config(config(name))

    factory.__name__ = name
    return factory
