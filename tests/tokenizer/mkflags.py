import sys, gguf
src, dst = sys.argv[1], sys.argv[2]
flags = dict(kv.split("=") for kv in sys.argv[3:])
r = gguf.GGUFReader(src)
w = gguf.GGUFWriter(dst, r.fields['general.architecture'].contents())
for k, f in r.fields.items():
    if k.startswith('GGUF.') or k == 'general.architecture' or k in flags:
        continue
    vt = f.types[0]
    if vt == gguf.GGUFValueType.ARRAY:
        w.add_key_value(k, f.contents(), vt, sub_type=f.types[-1])
    else:
        w.add_key_value(k, f.contents(), vt)
for k, v in flags.items():
    w.add_bool(k, v == "1")
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
