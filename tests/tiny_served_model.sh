# Sourced by the server's end-to-end tests: make_tiny_served_model TTT ROOT trains a tokenizer
# small enough to train in a second (vocabulary 384, on the README and a few headers; SentencePiece
# needs a piece per character that 98% coverage keeps, 321 of them once the README grew) and makes
# a tiny TTT-E2E model with that vocabulary in ./model, the tokenizer inside it (where the server
# looks for it). Prints FAIL and returns 1 on an error.
make_tiny_served_model() {
  local ttt="$1" root="$2"
  cat "$root"/README.md "$root"/src/inference/*.h "$root"/src/server/*.h > corpus.txt
  "$ttt" tokenizer train --input corpus.txt --vocab-size 384 --character-coverage 0.98 --out tok > /dev/null 2>&1 ||
    { echo "FAIL: tokenizer train"; return 1; }
  cat > cfg.json <<'JSON'
{"vocab_size": 384, "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2,
 "intermediate_size": 24, "seq_modeling_block": "SWA", "sliding_window_size": 6,
 "mini_batch_size": 4, "prime": true, "suffix_len": 2, "rope_theta": 10000,
 "bos_token_id": 0, "initializer_range": 0.2}
JSON
  "$ttt" init --config cfg.json --seed 3 --out model > /dev/null || { echo "FAIL: init"; return 1; }
  cp tok.model model/tokenizer.model
}
