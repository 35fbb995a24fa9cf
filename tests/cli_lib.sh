# Shared by the shell tests (sourced): little-endian writers for token files and safetensors
# headers, and the tiny TTT-E2E config of the CLI contract (vocab 40, 3 layers, 2 prime, b 4).

# le32 N / le64 N: N as 4 / 8 little-endian bytes on stdout.
le32() { printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $((($1 >> 8) & 255)) $((($1 >> 16) & 255)) $((($1 >> 24) & 255)))"; }
le64() { le32 $(($1 & 0xffffffff)); le32 $((($1 >> 32) & 0xffffffff)); }

# write_tokens FILE ID...: an int32 little-endian token file.
write_tokens() { local out="$1"; shift; : > "$out"; for id in "$@"; do le32 "$id" >> "$out"; done; }

# write_tiny_config FILE
write_tiny_config() {
  cat > "$1" <<'JSON'
{"vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2,
 "intermediate_size": 24, "seq_modeling_block": "SWA", "sliding_window_size": 6,
 "mini_batch_size": 4, "prime": true, "suffix_len": 2, "rope_theta": 10000,
 "bos_token_id": 0, "initializer_range": 0.2}
JSON
}
