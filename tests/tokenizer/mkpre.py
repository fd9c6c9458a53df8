import sys, gguf
src, dst, pre = sys.argv[1], sys.argv[2], sys.argv[3]
r = gguf.GGUFReader(src)
arch = r.fields['general.architecture'].contents()
w = gguf.GGUFWriter(dst, arch)
for k, f in r.fields.items():
    if k.startswith('GGUF.') or k == 'general.architecture':
        continue
    if k == 'tokenizer.ggml.pre':
        continue
    vt = f.types[0]
    val = f.contents()
    if vt == gguf.GGUFValueType.ARRAY:
        w.add_key_value(k, val, vt, sub_type=f.types[-1])
    else:
        w.add_key_value(k, val, vt)
if pre != '-':
    w.add_string('tokenizer.ggml.pre', pre)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
