// Dev-only oracle: llama.cpp (vendored in llama-cpp-python 0.3.36) tokenizing cases from stdin.
// stdin lines: "<add_special> <parse_special> <hex text>"; stdout: "<ids>\t<hex detok(keep,special)>\t<hex detok(remove,nospecial)>"
#include "llama.h"
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

static std::string unhex(const std::string & h) {
    std::string s;
    for (size_t i = 0; i + 1 < h.size(); i += 2) s.push_back((char) std::stoi(h.substr(i, 2), nullptr, 16));
    return s;
}
static std::string hex(const std::string & s) {
    static const char * d = "0123456789abcdef";
    std::string h;
    for (unsigned char c : s) { h.push_back(d[c >> 4]); h.push_back(d[c & 15]); }
    return h;
}
static std::string detok(const llama_vocab * v, const std::vector<llama_token> & ids, bool rm, bool sp) {
    std::string out(ids.size() * 16 + 64, '\0');
    int n = llama_detokenize(v, ids.data(), ids.size(), &out[0], out.size(), rm, sp);
    if (n < 0) { out.resize(-n); n = llama_detokenize(v, ids.data(), ids.size(), &out[0], out.size(), rm, sp); }
    out.resize(n);
    return out;
}
int main(int argc, char ** argv) {
    llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
    llama_backend_init();
    auto mp = llama_model_default_params();
    mp.vocab_only = true;
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "load failed\n"); return 1; }
    const llama_vocab * v = llama_model_get_vocab(model);
    int n = llama_vocab_n_tokens(v);
    printf("meta bos=%d eos=%d eot=%d add_bos=%d add_eos=%d eog=", llama_vocab_bos(v), llama_vocab_eos(v), llama_vocab_eot(v),
           llama_vocab_get_add_bos(v), llama_vocab_get_add_eos(v));
    for (int i = 0; i < n; i++) if (llama_vocab_is_eog(v, i)) printf("%d,", i);
    printf("\n");
    std::string line;
    while (std::getline(std::cin, line)) {
        int add = line[0] - '0', ps = line[2] - '0';
        std::string text = unhex(line.substr(4));
        std::vector<llama_token> ids(text.size() * 4 + 16);
        int k = llama_tokenize(v, text.data(), text.size(), ids.data(), ids.size(), add, ps);
        ids.resize(k < 0 ? 0 : k);
        for (size_t i = 0; i < ids.size(); i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\t%s\t%s\n", hex(detok(v, ids, false, true)).c_str(), hex(detok(v, ids, true, false)).c_str());
    }
    return 0;
}
