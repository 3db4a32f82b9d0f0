/** `bty inspect | catalog check | flash` with oras:// references, against a real registry. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBty } from '../helpers/cli.ts';
import { convertImage, makeRawImage, sha256File, type MadeImage } from '../helpers/images.ts';
import {
  MEDIA_TYPES,
  pushArtifact,
  pushIndex,
  startRegistry,
  type Registry,
} from '../helpers/registry.ts';

const MiB = 1 << 20;
const OCTET = 'application/octet-stream';

let dir: string;
let reg: Registry;
let raw: MadeImage;
let zst: MadeImage;
let pushedLayer: string;

function jsonLines(text: string): Array<Record<string, unknown>> {
  return text
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-oras-cli-'));
  raw = await makeRawImage(join(dir, 'disk.img'), { sizeBytes: 8 * MiB, seed: 3 });
  zst = await convertImage(raw.path, 'img.zst', join(dir, 'disk.img.zst'));
  reg = await startRegistry();
  const a = await pushArtifact(reg, 'os/disk', '1', {
    layers: [{ file: zst.path, mediaType: OCTET, title: 'disk-x86_64.img.zst' }],
  });
  pushedLayer = a.layers[0]!.digest;
  const b = await pushArtifact(reg, 'os/disk', null, {
    layers: [{ file: zst.path, mediaType: OCTET, title: 'disk-aarch64.img.zst' }],
  });
  await pushIndex(
    reg,
    'os/disk',
    'multi',
    [
      {
        ...a,
        mediaType: MEDIA_TYPES.ociManifest,
        platform: { os: 'linux', architecture: 'amd64' },
      },
      {
        ...b,
        mediaType: MEDIA_TYPES.ociManifest,
        platform: { os: 'linux', architecture: 'arm64' },
      },
    ].map((e) => ({
      digest: e.digest,
      size: e.size,
      mediaType: e.mediaType,
      platform: e.platform,
    })),
    'oci',
  );
  await pushArtifact(reg, 'os/catalog', 'latest', {
    layers: [
      {
        data: Buffer.from(
          `version = 1\n[[images]]\nname = "disk"\nsrc = "oras://${reg.host}/os/disk:1"\n`,
        ),
        mediaType: 'application/toml',
        title: 'catalog.toml',
      },
    ],
  });
}, 60_000);

afterAll(async () => {
  await reg?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('bty with oras://', () => {
  it('inspect shows the resolved layer: digest, title, format, size', async () => {
    const r = await runBty('inspect', `oras://${reg.host}/os/disk:1`, '--json');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(out.kind).toBe('oras');
    expect(out.format).toBe('img.zst');
    expect(out.size_bytes).toBe(zst.sizeBytes);
    expect(out.virtual_size_bytes).toBe(8 * MiB);
    expect(out.sha256).toBe(zst.sha256);
    const resolved = out.resolved as Record<string, unknown>;
    expect(resolved.digest).toBe(pushedLayer);
    expect(resolved.title).toBe('disk-x86_64.img.zst');

    const text = await runBty('inspect', `oras://${reg.host}/os/disk:1`);
    expect(text.stdout).toContain(`layer    ${pushedLayer} (disk-x86_64.img.zst)`);
    expect(text.stdout).toContain('(layer digest)');
  });

  it('inspect --platform picks the entry of an index, and shows it', async () => {
    const r = await runBty(
      'inspect',
      `oras://${reg.host}/os/disk:multi`,
      '--platform',
      'linux/arm64',
      '--json',
    );
    expect(r.code).toBe(0);
    const resolved = (JSON.parse(r.stdout) as { resolved: Record<string, unknown> }).resolved;
    expect(resolved.platform).toBe('linux/arm64');
    expect(resolved.title).toBe('disk-aarch64.img.zst');
  });

  it('catalog check reads a catalog published as an artifact', async () => {
    const r = await runBty('catalog', 'check', `oras://${reg.host}/os/catalog:latest`, '--json');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`oras://${reg.host}/os/disk:1`);
  });

  it('flash writes the image and reports the digest it checked', async () => {
    const out = join(dir, 'out.img');
    const r = await runBty('flash', `oras://${reg.host}/os/disk:1`, out, '--yes', '--json');
    expect(r.code).toBe(0);
    const result = jsonLines(r.stdout).at(-1)!;
    expect(result.type).toBe('result');
    expect(result.sha256_verified).toBe(true);
    expect(await sha256File(out)).toBe(raw.sha256);
  });

  it.each([
    ['an unknown tag', (h: string) => `oras://${h}/os/disk:nope`, 2, 'BTY_ERR_ORAS_NOT_FOUND'],
    ['an unknown repository', (h: string) => `oras://${h}/os/none:1`, 2, 'BTY_ERR_ORAS_NOT_FOUND'],
    ['a malformed reference', (h: string) => `oras://${h}/Os/disk:1`, 2, 'BTY_ERR_SRC_INVALID'],
    ['a missing platform', (h: string) => `oras://${h}/os/disk:multi`, 2, 'BTY_ERR_ORAS_ARTIFACT'],
  ])('%s: exit %i with %s', async (_what, ref, code, error) => {
    const args = ['flash', ref(reg.host), join(dir, 'never.img'), '--yes'];
    if (error === 'BTY_ERR_ORAS_ARTIFACT') args.push('--platform', 'linux/s390x');
    const r = await runBty(...args);
    expect(r.code).toBe(code);
    expect(r.stderr).toContain(error);
  });

  it('--platform on a source that is not oras:// is refused (exit 2)', async () => {
    const r = await runBty(
      'flash',
      zst.path,
      join(dir, 'never.img'),
      '--yes',
      '--platform',
      'linux/arm64',
    );
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--platform applies to oras:\/\/ references only/);
    const i = await runBty('inspect', zst.path, '--platform', 'linux/arm64');
    expect(i.code).toBe(2);
  });

  it('a --sha256 that contradicts the layer digest is refused before writing (exit 4)', async () => {
    const r = await runBty(
      'flash',
      `oras://${reg.host}/os/disk:1`,
      join(dir, 'never.img'),
      '--yes',
      '--sha256',
      'ab'.repeat(32),
    );
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/not the digest the source publishes/);
  });
});
