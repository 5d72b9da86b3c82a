# Keeps only the sections of a NIST CAVP GCM .rsp file whose parameter block
# says [IVlen = 96] and [Taglen = 128]; comment header lines are kept.
import sys
src, dst = sys.argv[1], sys.argv[2]
out, header, params, keep, in_params = [], [], {}, False, False
lines = open(src).read().splitlines()
body_started = False
for line in lines:
    if line.startswith('#') and not body_started:
        out.append(line)
        continue
    if line.startswith('['):
        if not in_params:
            params = {}
            block = []
            in_params = True
        body_started = True
        k, v = line.strip('[]').split('=')
        params[k.strip()] = v.strip()
        block.append(line)
        continue
    if in_params:
        in_params = False
        keep = params.get('IVlen') == '96' and params.get('Taglen') == '128'
        if keep:
            out.append('')
            out.extend(block)
    if keep:
        out.append(line)
out.insert(len([l for l in out if l.startswith('#')]), '# Filtered for kmsd: only the [IVlen = 96] [Taglen = 128] sections are kept (see ../SOURCE).')
open(dst, 'w').write('\n'.join(out) + '\n')
