// Evaluates token ids with llama.cpp exactly as the goldens were made (llama-cpp-python 0.3.36
// defaults: n_ctx 512, n_batch = n_ubatch = 512, 2 threads, no flash attention, F16 KV cache),
// writing every F32 intermediate tensor of the prompt batch (and of each single-token step
// that follows) as raw little-endian f32 into OUTDIR, named STEP_INDEX_NAME.f32, plus the
// logits of every prompt position (STEP_logits.f32).
//
// usage: dump MODEL OUTDIR N_GEN TOKEN...
//   N_GEN  greedy tokens evaluated one at a time after the prompt (0 for the prompt only)
#include "llama.h"
#include "ggml.h"
#include "ggml-backend.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

struct Dump {
    std::string dir;
    int step = 0;
    int index = 0;
};

static bool on_tensor(struct ggml_tensor * t, bool ask, void * user) {
    if (ask) {
        return true;  // every node
    }
    auto * d = (Dump *) user;
    if (t->type != GGML_TYPE_F32 || !ggml_is_contiguous(t)) {
        return true;
    }
    std::vector<float> buf(ggml_nelements(t));
    ggml_backend_tensor_get(t, buf.data(), 0, buf.size() * sizeof(float));
    char path[1024];
    snprintf(path, sizeof path, "%s/%02d_%04d_%s_%lldx%lldx%lld.f32", d->dir.c_str(), d->step,
             d->index++, t->name, (long long) t->ne[0], (long long) t->ne[1],
             (long long) t->ne[2]);
    FILE * f = fopen(path, "wb");
    if (f) {
        fwrite(buf.data(), sizeof(float), buf.size(), f);
        fclose(f);
    }
    return true;
}

int main(int argc, char ** argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL OUTDIR N_GEN TOKEN...\n", argv[0]);
        return 2;
    }
    Dump dump;
    dump.dir = argv[2];
    const int n_gen = atoi(argv[3]);
    std::vector<llama_token> tokens;
    for (int i = 4; i < argc; i++) {
        tokens.push_back(atoi(argv[i]));
    }

    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        return 1;
    }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 512;
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_threads = 2;
    cp.n_threads_batch = 2;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.cb_eval = on_tensor;
    cp.cb_eval_user_data = &dump;
    llama_context * ctx = llama_init_from_model(model, cp);
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

    llama_batch batch = llama_batch_init(512, 0, 1);
    for (size_t i = 0; i < tokens.size(); i++) {
        batch.token[i] = tokens[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    batch.n_tokens = tokens.size();
    int pos = tokens.size();
    for (int step = 0; step <= n_gen; step++) {
        dump.step = step;
        dump.index = 0;
        if (llama_decode(ctx, batch) != 0) {
            return 1;
        }
        char path[1024];
        snprintf(path, sizeof path, "%s/%02d_logits.f32", dump.dir.c_str(), step);
        FILE * f = fopen(path, "wb");
        int best = 0;
        for (int i = 0; i < batch.n_tokens; i++) {
            const float * l = llama_get_logits_ith(ctx, i);
            fwrite(l, sizeof(float), n_vocab, f);
            best = 0;
            for (int v = 1; v < n_vocab; v++) {
                if (l[v] > l[best]) {
                    best = v;
                }
            }
        }
        fclose(f);
        printf("%d\n", best);
        batch.n_tokens = 1;
        batch.token[0] = best;
        batch.pos[0] = pos++;
        batch.logits[0] = 1;
    }
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
