import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  deleteManifest,
  getManifest,
  MEDIA_TYPES,
  pushArtifact,
  pushBlob,
  pushDockerV2,
  pushIndex,
  startRegistry,
  type Registry,
} from './registry.ts';

const MiB = 1024 * 1024;

function sha256(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** Parses `Bearer realm="…",service="…",scope="…"` into its parameters. */
function parseChallenge(header: string | null): Record<string, string> {
  expect(header).toMatch(/^Bearer /);
  const params: Record<string, string> = {};
  for (const m of (header ?? '').matchAll(/(\w+)="([^"]*)"/g)) params[m[1]!] = m[2]!;
  return params;
}

async function getToken(
  reg: Registry,
  scopes: string[],
  basic?: { user: string; password: string },
): Promise<{ status: number; token: string | null }> {
  const url = new URL(reg.tokenUrl!);
  url.searchParams.set('service', reg.service!);
  for (const s of scopes) url.searchParams.append('scope', s);
  const headers: Record<string, string> = {};
  if (basic) {
    headers.Authorization = `Basic ${Buffer.from(`${basic.user}:${basic.password}`).toString('base64')}`;
  }
  const res = await fetch(url, { headers });
  if (res.status !== 200) return { status: res.status, token: null };
  const body = (await res.json()) as Record<string, unknown>;
  expect(body.access_token).toBe(body.token);
  expect(body.expires_in).toBeGreaterThan(0);
  expect(typeof body.issued_at).toBe('string');
  return { status: 200, token: body.token as string };
}

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-registry-test-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('registry harness without auth', () => {
  let reg: Registry;

  beforeAll(async () => {
    reg = await startRegistry();
  });

  afterAll(async () => {
    await reg?.stop();
  });

  it('answers /v2/ on 127.0.0.1', async () => {
    expect(reg.host).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(reg.url).toBe(`http://${reg.host}`);
    expect(reg.tokenUrl).toBeNull();
    const res = await fetch(`${reg.url}/v2/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('docker-distribution-api-version')).toBe('registry/2.0');
  });

  it('pushes an artifact with two layers that reads back byte for byte', async () => {
    const small = randomBytes(1000);
    const large = randomBytes(6 * MiB + 123);
    const file = join(dir, 'disk.img');
    await writeFile(file, large);

    const pushed = await pushArtifact(reg, 'os/debian', 'v1', {
      artifactType: 'application/vnd.bty.test.disk',
      annotations: { 'org.opencontainers.image.version': '1' },
      layers: [
        { data: small, mediaType: 'application/vnd.bty.test.readme', title: 'README' },
        {
          file,
          mediaType: 'application/octet-stream',
          title: 'disk.img',
          annotations: { 'com.example.size': String(large.length) },
        },
      ],
    });
    expect(pushed.layers).toEqual([
      { digest: sha256(small), size: small.length },
      { digest: sha256(large), size: large.length },
    ]);
    expect(pushed.manifest).toMatchObject({
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociManifest,
      artifactType: 'application/vnd.bty.test.disk',
      config: { mediaType: MEDIA_TYPES.ociEmpty, digest: sha256(Buffer.from('{}')), size: 2 },
      layers: [
        { annotations: { 'org.opencontainers.image.title': 'README' } },
        {
          annotations: {
            'org.opencontainers.image.title': 'disk.img',
            'com.example.size': String(large.length),
          },
        },
      ],
    });

    const res = await fetch(`${reg.url}/v2/os/debian/manifests/v1`, {
      headers: { Accept: MEDIA_TYPES.ociManifest },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(MEDIA_TYPES.ociManifest);
    expect(res.headers.get('docker-content-digest')).toBe(pushed.digest);
    const body = Buffer.from(await res.arrayBuffer());
    expect(sha256(body)).toBe(pushed.digest);
    expect(JSON.parse(body.toString('utf8'))).toEqual(pushed.manifest);

    const blob = await fetch(`${reg.url}/v2/os/debian/blobs/${pushed.layers[1]!.digest}`);
    expect(blob.status).toBe(200);
    expect(sha256(Buffer.from(await blob.arrayBuffer()))).toBe(sha256(large));

    // By digest only, and a blob already there is not uploaded again.
    const again = await pushArtifact(reg, 'os/debian', null, {
      layers: [{ data: small, mediaType: 'application/vnd.bty.test.readme' }],
    });
    const byDigest = await getManifest(reg, 'os/debian', again.digest);
    expect(byDigest.digest).toBe(again.digest);
    expect(byDigest.manifest).toEqual(again.manifest);
  });

  it('pushes a Docker v2 image and an index of both kinds', async () => {
    const amd64 = await pushDockerV2(reg, 'os/multi', 'amd64', randomBytes(5000));
    const arm64 = await pushDockerV2(reg, 'os/multi', null, randomBytes(7000), randomBytes(10));
    expect(arm64.layers).toHaveLength(2);

    const docker = await getManifest(reg, 'os/multi', 'amd64', MEDIA_TYPES.dockerManifest);
    expect(docker.mediaType).toBe(MEDIA_TYPES.dockerManifest);
    expect(docker.digest).toBe(amd64.digest);
    expect(docker.manifest).toMatchObject({
      config: { mediaType: MEDIA_TYPES.dockerConfig, digest: amd64.config.digest },
      layers: [{ mediaType: MEDIA_TYPES.dockerLayer, digest: amd64.layers[0]!.digest }],
    });

    const entries = [
      { ...amd64, platform: { os: 'linux', architecture: 'amd64' } },
      { ...arm64, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    ];
    const list = await pushIndex(reg, 'os/multi', 'latest', entries, 'docker');
    const listRes = await fetch(`${reg.url}/v2/os/multi/manifests/latest`, {
      headers: { Accept: MEDIA_TYPES.dockerManifestList },
    });
    expect(listRes.headers.get('content-type')).toBe(MEDIA_TYPES.dockerManifestList);
    expect(listRes.headers.get('docker-content-digest')).toBe(list.digest);
    expect(await listRes.json()).toMatchObject({
      manifests: [
        { digest: amd64.digest, size: amd64.size, platform: { architecture: 'amd64' } },
        { digest: arm64.digest, size: arm64.size, platform: { variant: 'v8' } },
      ],
    });

    const artifact = await pushArtifact(reg, 'os/multi', null, {
      artifactType: 'application/vnd.bty.test.disk',
      layers: [{ data: randomBytes(100), mediaType: 'application/octet-stream' }],
    });
    const oci = await pushIndex(
      reg,
      'os/multi',
      'oci',
      [{ ...artifact, platform: { os: 'linux', architecture: 'riscv64' } }],
      'oci',
    );
    const ociRes = await getManifest(reg, 'os/multi', 'oci', MEDIA_TYPES.ociIndex);
    expect(ociRes.mediaType).toBe(MEDIA_TYPES.ociIndex);
    expect(ociRes.digest).toBe(oci.digest);
    expect(ociRes.manifest).toEqual(oci.manifest);
  });

  it('deletes manifests and reports failures with status and body', async () => {
    const pushed = await pushDockerV2(reg, 'os/gone', 'v1', randomBytes(100));
    await deleteManifest(reg, 'os/gone', pushed.digest);
    await expect(getManifest(reg, 'os/gone', pushed.digest)).rejects.toThrow(
      /answered 404 .*MANIFEST_UNKNOWN/,
    );
    await expect(getManifest(reg, 'os/none', 'v1')).rejects.toThrow(/answered 404/);
  });

  it('streams a file blob without reading it whole', async () => {
    const file = join(dir, 'sparse.img');
    const data = Buffer.alloc(3 * MiB);
    data.write('end', data.length - 3);
    await writeFile(file, data);
    const pushed = await pushBlob(reg, 'os/blob', { file });
    expect(pushed).toEqual({ digest: sha256(data), size: data.length });
    const head = await fetch(`${reg.url}/v2/os/blob/blobs/${pushed.digest}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(data.length));
  });
});

describe('registry harness with token auth', () => {
  let reg: Registry;
  const alice = { user: 'alice', password: 'wonderland' };

  beforeAll(async () => {
    reg = await startRegistry({
      auth: 'token',
      basicUsers: { [alice.user]: alice.password },
      // Like the default, but nobody may touch `private/*` anonymously.
      tokenPolicy: (scope, user) => {
        if (user !== null) return scope.actions;
        if (scope.name.startsWith('private/')) return [];
        return scope.actions.filter((a) => a === 'pull');
      },
    });
  });

  afterAll(async () => {
    await reg?.stop();
  });

  it('challenges with the Bearer realm and service', async () => {
    const res = await fetch(`${reg.url}/v2/`);
    expect(res.status).toBe(401);
    const challenge = parseChallenge(res.headers.get('www-authenticate'));
    expect(challenge.realm).toBe(reg.tokenUrl);
    expect(challenge.service).toBe(reg.service);
  });

  it('lets the harness push, and anonymous tokens pull', async () => {
    const data = randomBytes(2000);
    const pushed = await pushArtifact(reg, 'os/public', 'v1', {
      artifactType: 'application/vnd.bty.test.disk',
      layers: [{ data, mediaType: 'application/octet-stream', title: 'disk.img' }],
    });
    await pushArtifact(reg, 'private/os', 'v1', {
      layers: [{ data, mediaType: 'application/octet-stream' }],
    });
    expect(reg.tokenRequests).toEqual([]); // the harness's own requests are not recorded

    const url = `${reg.url}/v2/os/public/manifests/v1`;
    const denied = await fetch(url, { headers: { Accept: MEDIA_TYPES.ociManifest } });
    expect(denied.status).toBe(401);
    const challenge = parseChallenge(denied.headers.get('www-authenticate'));
    expect(challenge.scope).toBe('repository:os/public:pull');

    const { token } = await getToken(reg, [challenge.scope!]);
    const res = await fetch(url, {
      headers: { Accept: MEDIA_TYPES.ociManifest, Authorization: `Bearer ${token}` },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('docker-content-digest')).toBe(pushed.digest);

    const blob = await fetch(`${reg.url}/v2/os/public/blobs/${pushed.layers[0]!.digest}`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    expect(sha256(Buffer.from(await blob.arrayBuffer()))).toBe(sha256(data));

    expect(reg.tokenRequests).toEqual([
      { scope: ['repository:os/public:pull'], user: null, service: reg.service, status: 200 },
    ]);
  });

  it('issues tokens without the refused actions, which the registry rejects', async () => {
    // The policy refuses private/* to anonymous users: the token carries no actions.
    const { token: refused } = await getToken(reg, ['repository:private/os:pull']);
    const res = await fetch(`${reg.url}/v2/private/os/manifests/v1`, {
      headers: { Accept: MEDIA_TYPES.ociManifest, Authorization: `Bearer ${refused}` },
    });
    expect([401, 403]).toContain(res.status);
    expect(res.headers.get('www-authenticate')).toMatch(/error="insufficient_scope"/);

    // The registry really checks the signature: a tampered token is invalid, not just short.
    const { token: good } = await getToken(reg, ['repository:os/public:pull']);
    const at = good!.length - 10;
    const tampered = `${good!.slice(0, at)}${good![at] === 'A' ? 'B' : 'A'}${good!.slice(at + 1)}`;
    const forged = await fetch(`${reg.url}/v2/os/public/manifests/v1`, {
      headers: { Accept: MEDIA_TYPES.ociManifest, Authorization: `Bearer ${tampered}` },
    });
    expect(forged.status).toBe(401);
    expect(forged.headers.get('www-authenticate')).toMatch(/error="invalid_token"/);

    // Anonymous push: granted pull only, so starting an upload is refused.
    const { token: pullOnly } = await getToken(reg, ['repository:os/public:pull,push']);
    const upload = await fetch(`${reg.url}/v2/os/public/blobs/uploads/`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${pullOnly}` },
    });
    expect([401, 403]).toContain(upload.status);

    // A known user with the right password may push; a wrong password gets no token at all.
    const { token: push } = await getToken(reg, ['repository:os/public:pull,push'], alice);
    const allowed = await fetch(`${reg.url}/v2/os/public/blobs/uploads/`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${push}` },
    });
    expect(allowed.status).toBe(202);
    expect(await getToken(reg, ['repository:os/public:pull'], { ...alice, password: 'x' })).toEqual(
      { status: 401, token: null },
    );

    expect(reg.tokenRequests.slice(-3)).toEqual([
      { scope: ['repository:os/public:pull,push'], user: null, service: reg.service, status: 200 },
      {
        scope: ['repository:os/public:pull,push'],
        user: 'alice',
        service: reg.service,
        status: 200,
      },
      { scope: ['repository:os/public:pull'], user: 'alice', service: reg.service, status: 401 },
    ]);
  });

  it('stops idempotently, leaving nothing behind', async () => {
    const other = await startRegistry({ auth: 'token' });
    await other.stop();
    await other.stop();
    await expect(fetch(`${other.url}/v2/`)).rejects.toThrow();
    await expect(fetch(other.tokenUrl!)).rejects.toThrow();
  });
});
