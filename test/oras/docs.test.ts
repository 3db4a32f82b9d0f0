/**
 * docs/oras.md tells publishers how to push an image with nothing but curl. This runs that very
 * script against a real registry and flashes the result, so the documentation cannot rot.
 */
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { flash } from '../../src/flash/engine.ts';
import { resolveOras } from '../../src/oras/index.ts';
import { convertImage, makeRawImage, sha256File, type MadeImage } from '../helpers/images.ts';
import { startRegistry, type Registry } from '../helpers/registry.ts';

const run = promisify(execFile);
let dir: string;
let reg: Registry;
let raw: MadeImage;

/** The first ```sh block after the heading "### With `curl` only". */
async function curlRecipe(): Promise<string> {
  const doc = await readFile(new URL('../../docs/oras.md', import.meta.url), 'utf8');
  const section = doc.slice(doc.indexOf('### With `curl` only'));
  const m = /```sh\n([\s\S]*?)```/.exec(section);
  if (!m) throw new Error('docs/oras.md: no sh block under "With `curl` only"');
  return m[1]!;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-oras-docs-'));
  raw = await makeRawImage(join(dir, 'disk.img'), { sizeBytes: 4 << 20, seed: 5 });
  const zst = await convertImage(raw.path, 'img.zst', join(dir, 'disk.img.zst'));
  await copyFile(zst.path, join(dir, 'debian-13.img.zst'));
  reg = await startRegistry();
}, 60_000);

afterAll(async () => {
  await reg?.stop();
  await rm(dir, { recursive: true, force: true });
});

it('the curl-only publishing recipe in docs/oras.md produces an artifact bty flashes', async () => {
  const script = await curlRecipe();
  await run('bash', ['-euo', 'pipefail', '-c', script], {
    cwd: dir,
    env: { ...process.env, REG: reg.url, REPO: 'acme/images/debian' },
  });
  const resolved = await resolveOras(`oras://${reg.host}/acme/images/debian:13`);
  expect(resolved.title).toBe('debian-13.img.zst');
  const out = join(dir, 'out.img');
  const result = await flash({ source: `oras://${reg.host}/acme/images/debian:13`, target: out });
  expect(result.plan.image.format).toBe('img.zst');
  expect(result.sha256_verified).toBe(true);
  expect(await sha256File(out)).toBe(raw.sha256);
});

it('... and with a push token in AUTH, against a registry that wants one', async () => {
  const secured = await startRegistry({ auth: 'token', basicUsers: { pub: 'lisher' } });
  try {
    const url = new URL(secured.tokenUrl!);
    url.searchParams.set('service', secured.service!);
    url.searchParams.set('scope', 'repository:acme/images/debian:pull,push');
    const res = await fetch(url, {
      headers: { authorization: `Basic ${Buffer.from('pub:lisher').toString('base64')}` },
    });
    const { token } = (await res.json()) as { token: string };
    const script = `AUTH=(-H "Authorization: Bearer $TOKEN")\n${await curlRecipe()}`;
    await run('bash', ['-euo', 'pipefail', '-c', script], {
      cwd: dir,
      env: { ...process.env, REG: secured.url, REPO: 'acme/images/debian', TOKEN: token },
    });
    const resolved = await resolveOras(`oras://${secured.host}/acme/images/debian:13`);
    expect(resolved.title).toBe('debian-13.img.zst');
  } finally {
    await secured.stop();
  }
});
