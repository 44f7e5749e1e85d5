/** Where porttrig's own files are, relative to the built JS (dist/src/). */
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';

/** The package root (holds package.json, build/, dist/). */
export const packageRoot = fileURLToPath(new URL('../../', import.meta.url));
/** The compiled eBPF object. PORTTRIG_BPF_OBJECT overrides it. */
export const bpfObjectPath = process.env.PORTTRIG_BPF_OBJECT ?? `${packageRoot}build/porttrig.bpf.o`;
/** porttrig's version, from package.json. */
export const version: string = (JSON.parse(readFileSync(`${packageRoot}package.json`, 'utf8')) as { version: string }).version;
