/** Where porttrig's own files are, relative to the built JS (dist/src/). */
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';

/** The package root (holds package.json, build/, dist/). */
export const packageRoot = fileURLToPath(new URL('../../', import.meta.url));
/**
 * The compiled eBPF object, built twice: with the conntrack check and without
 * it (bpf/conntrack.h); the daemon picks one (src/bpf/conntrack.ts).
 */
export const bpfObjectPaths = {
  conntrack: `${packageRoot}build/porttrig.bpf.o`,
  noct: `${packageRoot}build/porttrig-noct.bpf.o`,
} as const;
/** PORTTRIG_BPF_OBJECT: load this object as it is, without choosing (tests, another build). */
export const bpfObjectOverride: string | null = process.env.PORTTRIG_BPF_OBJECT || null;
/** porttrig's version, from package.json. */
export const version: string = (JSON.parse(readFileSync(`${packageRoot}package.json`, 'utf8')) as { version: string }).version;
