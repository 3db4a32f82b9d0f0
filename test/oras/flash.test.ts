/**
 * Flashing oras:// references end to end: every image format pushed to a real registry,
 * flashed to a file and a loop device and compared by hash; then the faults a registry behind
 * a CDN produces (cut transfers, one-time signed URLs, an expired token, a corrupted blob, a tag
 * moved mid-flash), the catalog path and the plain-HTTP rule.
 */
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BtyError } from '../../src/core/errors.ts';
import { loadCatalog } from '../../src/catalog/index.ts';
import { flash } from '../../src/flash/engine.ts';
import { resolveOras } from '../../src/oras/index.ts';
import { convertImage, makeRawImage, sha256File, type MadeImage } from '../helpers/images.ts';
import { createLoopDevice, isRoot, type LoopDevice } from '../helpers/loop.ts';
import { startRegistryFront, type RegistryFront } from '../helpers/registry-front.ts';
import { pushArtifact, startRegistry, type Registry } from '../helpers/registry.ts';

const MiB = 1 << 20;
const IMAGE_BYTES = 16 * MiB;
const FORMATS = ['img', 'img.gz', 'img.zst', 'img.xz', 'img.bz2', 'qcow2'] as const;
const OCTET = 'application/octet-stream';
const FAST_HTTP = { backoffMs: 10, maxBackoffMs: 50, idleTimeoutMs: 5000 };

let dir: string;
let raw: MadeImage;
const files = new Map<string, MadeImage>();
let reg: Registry;
let secured: Registry;
let loop: LoopDevice | null = null;

async function fillGarbage(path: string, bytes: number): Promise<void> {
  const fh = await open(path, path.startsWith('/dev/') ? 'r+' : 'w');
  try {
    await fh.write(Buffer.alloc(bytes, 0xa5), 0, bytes, 0);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function target(kind: 'file' | 'loop', name: string): Promise<string> {
  const path = kind === 'loop' ? loop!.path : join(dir, `out-${name}.img`);
  await fillGarbage(path, 20 * MiB);
  return path;
}

async function failure(p: Promise<unknown>): Promise<BtyError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BtyError);
  return err as BtyError;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-oras-flash-'));
  raw = await makeRawImage(join(dir, 'disk.img'), { sizeBytes: IMAGE_BYTES, seed: 11 });
  files.set('img', raw);
  for (const f of FORMATS) {
    if (f !== 'img') files.set(f, await convertImage(raw.path, f, join(dir, `disk.${f}`)));
  }
  reg = await startRegistry();
  secured = await startRegistry({ auth: 'token' });
  for (const f of FORMATS) {
    await pushArtifact(reg, 'os/disk', f.replace('.', '-'), {
      layers: [{ file: files.get(f)!.path, mediaType: OCTET, title: `disk.${f}` }],
    });
  }
  for (const f of ['img', 'img.zst'] as const) {
    await pushArtifact(secured, 'os/disk', f.replace('.', '-'), {
      layers: [{ file: files.get(f)!.path, mediaType: OCTET, title: `disk.${f}` }],
    });
  }
  if (isRoot()) loop = await createLoopDevice({ sizeBytes: 20 * MiB });
}, 120_000);

afterAll(async () => {
  await loop?.detach();
  await reg?.stop();
  await secured?.stop();
  await rm(dir, { recursive: true, force: true });
});

const targets = isRoot() ? (['file', 'loop'] as const) : (['file'] as const);

describe.each(FORMATS)('%s from the registry', (format) => {
  it.each(targets)('onto a %s: same bytes, layer digest checked on the wire', async (kind) => {
    const out = await target(kind, `fmt-${format}`);
    const result = await flash({
      source: `oras://${reg.host}/os/disk:${format.replace('.', '-')}`,
      target: out,
      verify: true,
      http: FAST_HTTP,
    });
    expect(result.plan.image.kind).toBe('oras');
    expect(result.plan.image.format).toBe(format);
    expect(result.plan.image.format_from).toBe('name');
    expect(result.plan.image.sha256).toBe(files.get(format)!.sha256);
    expect(result.plan.image.sha256_from).toBe('source');
    expect(result.sha256_verified).toBe(true);
    expect(await sha256File(out, { length: IMAGE_BYTES })).toBe(raw.sha256);
  });
});

describe('the format of an untitled layer', () => {
  beforeAll(async () => {
    for (const f of ['img.zst', 'img.gz'] as const) {
      await pushArtifact(reg, 'os/untitled', f.replace('.', '-'), {
        layers: [{ file: files.get(f)!.path, mediaType: OCTET }],
      });
    }
  });

  it("comes from the catalog entry's format hint", async () => {
    const out = await target('file', 'hint');
    const result = await flash({
      source: `oras://${reg.host}/os/untitled:img-zst`,
      target: out,
      formatHint: 'img.zst',
    });
    expect(result.plan.image.format).toBe('img.zst');
    expect(result.plan.image.format_from).toBe('hint');
    expect(await sha256File(out, { length: IMAGE_BYTES })).toBe(raw.sha256);
  });

  it("and without a hint is upstream's gzip", async () => {
    const out = await target('file', 'default');
    const result = await flash({ source: `oras://${reg.host}/os/untitled:img-gz`, target: out });
    expect(result.plan.image.format).toBe('img.gz');
    expect(result.plan.image.format_from).toBe('default');
    expect(await sha256File(out, { length: IMAGE_BYTES })).toBe(raw.sha256);
  });

  it('a wrong guess is caught by the content check, not written', async () => {
    const err = await failure(
      flash({ source: `oras://${reg.host}/os/untitled:img-zst`, target: join(dir, 'never.img') }),
    );
    expect(err.code).toBe('BTY_ERR_FORMAT_MISMATCH');
  });
});

describe('through a CDN that misbehaves', () => {
  let front: RegistryFront;
  beforeAll(async () => {
    front = await startRegistryFront(secured.url);
  });
  afterAll(async () => {
    await front?.stop();
  });

  it('cut every 1 MiB on one-time signed URLs: re-resolved, resumed, verified', async () => {
    front.faults = { redirect: true, oneTimeUrls: true, cutEveryBytes: MiB };
    front.requests.length = 0;
    const out = await target('file', 'cdn-cut');
    const result = await flash({
      source: `oras://${front.host}/os/disk:img-zst`,
      target: out,
      verify: true,
      http: FAST_HTTP,
    });
    expect(result.resumes).toBeGreaterThan(2);
    expect(result.sha256_verified).toBe(true);
    expect(await sha256File(out, { length: IMAGE_BYTES })).toBe(raw.sha256);
    const cdn = front.requests.filter((r) => r.origin === 'cdn');
    // Expired signatures were refused and the registry asked again for a fresh URL.
    expect(cdn.some((r) => r.status === 403)).toBe(true);
    expect(cdn.filter((r) => r.range !== null).length).toBeGreaterThan(1);
    // The bearer token went to the registry and never to the CDN.
    expect(cdn.some((r) => r.authorization)).toBe(false);
    expect(front.requests.some((r) => r.origin === 'registry' && r.authorization)).toBe(true);
  });

  it('an expired token on a resume: a new one is fetched and the download continues', async () => {
    front.faults = { cutEveryBytes: 2 * MiB, expireTokenOnResume: true };
    const tokensBefore = secured.tokenRequests.length;
    const out = await target('file', 'token');
    const result = await flash({
      source: `oras://${front.host}/os/disk:img-zst`,
      target: out,
      http: FAST_HTTP,
    });
    expect(result.sha256_verified).toBe(true);
    expect(front.faults.expireTokenOnResume).toBe(false);
    expect(secured.tokenRequests.length).toBeGreaterThan(tokensBefore + 1);
    expect(await sha256File(out, { length: IMAGE_BYTES })).toBe(raw.sha256);
  });

  it('a CDN with its own ETag, whose expired URLs answer 400: resumed all the same', async () => {
    front.faults = {
      redirect: true,
      oneTimeUrls: true,
      cutEveryBytes: 3 * MiB,
      cdnOwnValidators: true,
      expiredStatus: 400,
    };
    front.requests.length = 0;
    const out = await target('file', 'cdn-etag');
    const result = await flash({
      source: `oras://${front.host}/os/disk:img`,
      target: out,
      http: FAST_HTTP,
    });
    expect(result.resumes).toBeGreaterThan(2);
    expect(result.sha256_verified).toBe(true);
    expect(front.requests.some((r) => r.origin === 'cdn' && r.status === 400)).toBe(true);
    expect(await sha256File(out, { length: IMAGE_BYTES })).toBe(raw.sha256);
  });

  it('a corrupted raw blob fails on its layer digest: BTY_ERR_INTEGRITY (exit 4)', async () => {
    front.faults = { corruptAt: 3 * MiB + 17 };
    const err = await failure(
      flash({
        source: `oras://${front.host}/os/disk:img`,
        target: join(dir, 'corrupt.img'),
        http: FAST_HTTP,
      }),
    );
    expect(err.code).toBe('BTY_ERR_INTEGRITY');
    expect(err.exitCode).toBe(4);
    expect(err.message).toContain(files.get('img')!.sha256);
  });

  it('a token realm on plain HTTP at a non-local host is refused, unless allowed', async () => {
    // (A name, not 127.1: URL parsing turns numeric hosts back into 127.0.0.1.)
    front.faults = { realmHost: 'tokens.invalid:8080' };
    const err = await failure(
      resolveOras(`oras://${front.host}/os/disk:img`, { env: {}, retryDelaysMs: [] }),
    );
    expect(err.code).toBe('BTY_ERR_ORAS_REGISTRY');
    expect(err.message).toMatch(/plain-HTTP realm/);
    expect(err.hint).toMatch(/BTY_ORAS_INSECURE/);
    // Listed: bty does ask it (and here finds no such host).
    const allowed = await failure(
      resolveOras(`oras://${front.host}/os/disk:img`, {
        env: { BTY_ORAS_INSECURE: 'tokens.invalid:8080' },
        retryDelaysMs: [],
      }),
    );
    expect(allowed.code).toBe('BTY_ERR_SOURCE_UNREACHABLE');
    expect(allowed.message).toContain('token request to http://tokens.invalid:8080');
  });
});

it('a tag moved between resolve and download: the resolved digest is what gets written', async () => {
  await pushArtifact(reg, 'os/moving', 'latest', {
    layers: [{ file: files.get('img.gz')!.path, mediaType: OCTET, title: 'disk.img.gz' }],
  });
  const out = await target('file', 'moving');
  const other = Buffer.alloc(4 * MiB, 0x11);
  const result = await flash({
    source: `oras://${reg.host}/os/moving:latest`,
    target: out,
    confirm: async () => {
      await pushArtifact(reg, 'os/moving', 'latest', {
        layers: [{ data: other, mediaType: OCTET, title: 'other.img' }],
      });
      return true;
    },
  });
  expect(result.plan.image.sha256).toBe(files.get('img.gz')!.sha256);
  expect(await sha256File(out, { length: IMAGE_BYTES })).toBe(raw.sha256);
  expect((await resolveOras(`oras://${reg.host}/os/moving:latest`)).title).toBe('other.img');
});

it('a catalog published as an artifact loads, and its oras:// entries flash', async () => {
  const toml = [
    'version = 1',
    '',
    '[[images]]',
    'name = "disk"',
    `src = "oras://${reg.host}/os/untitled:img-zst"`,
    'format = "img.zst"',
    '',
  ].join('\n');
  await pushArtifact(reg, 'os/catalog', 'latest', {
    layers: [{ data: Buffer.from(toml), mediaType: 'application/toml', title: 'catalog.toml' }],
  });
  const catalog = await loadCatalog(`oras://${reg.host}/os/catalog:latest`);
  const entry = catalog.entries[0]!;
  expect(entry.src).toBe(`oras://${reg.host}/os/untitled:img-zst`);
  const out = await target('file', 'catalog');
  await flash({ source: entry.src, target: out, formatHint: entry.format ?? null });
  expect(await sha256File(out, { length: IMAGE_BYTES })).toBe(raw.sha256);
});

describe('plain HTTP only for loopback and BTY_ORAS_INSECURE', () => {
  // `127.1` is 127.0.0.1 to the resolver, but not a name bty treats as loopback: it stands for
  // any registry host that is not local.
  const host = () => `127.1:${reg.host.split(':')[1]}`;

  it('another host is spoken to over HTTPS, never silently over HTTP', async () => {
    const err = await failure(
      resolveOras(`oras://${host()}/os/disk:img`, { env: {}, retryDelaysMs: [] }),
    );
    expect(err.code).toBe('BTY_ERR_SOURCE_UNREACHABLE');
    expect(err.hint).toMatch(/BTY_ORAS_INSECURE/);
  });

  it('... unless BTY_ORAS_INSECURE lists it', async () => {
    const r = await resolveOras(`oras://${host()}/os/disk:img`, {
      env: { BTY_ORAS_INSECURE: `example.invalid:1, ${host()}` },
    });
    expect(r.title).toBe('disk.img');
    expect(r.blobUrl.startsWith(`http://${host()}/`)).toBe(true);
  });
});
