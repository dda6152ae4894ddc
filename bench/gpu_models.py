"""Random-weight models for bench/gpu.sh, built from configs (no weights travel to the GPU machine):
the all-MiniLM-L6-v2 encoder (its config and tokenizer, from bench/gpu-wheels.sh's .gpu/minilm) and a
Llama-3.2-1B-shaped causal LM (16 layers of 2048, grouped-query attention, 1.1B parameters) over
MiniLM's tokenizer. The GPU benchmarks measure speed and memory, which random weights do not change.

    python bench/gpu_models.py .gpu/minilm OUT_DIR    # writes OUT_DIR/minilm and OUT_DIR/llama-1b
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, LlamaConfig, LlamaForCausalLM


def main(source: str, out: str) -> None:
    root = Path(out)
    minilm = root / "minilm"
    shutil.copytree(source, minilm, dirs_exist_ok=True)
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.from_pretrained(source)).save_pretrained(str(minilm))
    tokenizer = AutoTokenizer.from_pretrained(source)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=2048,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
                         eos_token_id=tokenizer.sep_token_id)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # initialised on the GPU: seconds
        model = LlamaForCausalLM(config)
    llama = root / "llama-1b"
    model.save_pretrained(str(llama))
    tokenizer.save_pretrained(str(llama))
    print(f"minilm: {sum(p.numel() for p in AutoModel.from_pretrained(str(minilm)).parameters()):,} parameters; "
          f"llama-1b: {sum(p.numel() for p in model.parameters()):,} parameters")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
