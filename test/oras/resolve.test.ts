/**
 * Resolving oras:// references against a real registry (Debian's docker-registry), open and
 * with token auth, with artifacts pushed through the distribution spec by the test harness.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BtyError } from '../../src/core/errors.ts';
import { machinePlatform, resolveOras } from '../../src/oras/index.ts';
import {
  MEDIA_TYPES,
  pushArtifact,
  pushBlob,
  pushDockerV2,
  pushIndex,
  startRegistry,
  type Registry,
} from '../helpers/registry.ts';

const OCTET = 'application/octet-stream';
const QUICK = { retryDelaysMs: [] as number[], timeoutMs: 10_000 };

let reg: Registry;
let secured: Registry;
let dir: string;
const disk = Buffer.alloc(64 * 1024, 7);
const other = Buffer.alloc(32 * 1024, 9);

async function failure(p: Promise<unknown>): Promise<BtyError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BtyError);
  return err as BtyError;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-oras-'));
  reg = await startRegistry();
  secured = await startRegistry({
    auth: 'token',
    basicUsers: { alice: 'wonderland' },
    tokenPolicy: (scope, user) =>
      scope.name.startsWith('private/') && user === null ? [] : scope.actions,
  });
}, 60_000);

afterAll(async () => {
  await reg?.stop();
  await secured?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('resolveOras on an open registry', () => {
  it('a tag of an OCI artifact: the image layer, its title and digest', async () => {
    const pushed = await pushArtifact(reg, 'os/debian', '13', {
      artifactType: 'application/vnd.bty.disk-image.v1',
      layers: [{ data: disk, mediaType: OCTET, title: 'debian-13.img.zst' }],
    });
    const r = await resolveOras(`oras://${reg.host}/os/debian:13`, QUICK);
    expect(r.digest).toBe(pushed.layers[0]!.digest);
    expect(r.size).toBe(disk.length);
    expect(r.title).toBe('debian-13.img.zst');
    expect(r.manifestDigest).toBe(pushed.digest);
    expect(r.platform).toBeNull();
    expect(r.blobUrl).toBe(`http://${reg.host}/v2/os/debian/blobs/${r.digest}`);
  });

  it('the host is case-insensitive: the canonical reference has it in lower case', async () => {
    const port = reg.host.split(':')[1]!;
    const r = await resolveOras(`oras://LocalHost:${port}/os/debian:13`, QUICK);
    expect(r.ref).toBe(`oras://localhost:${port}/os/debian:13`);
    expect(r.title).toBe('debian-13.img.zst');
  });

  it('a malformed --platform is bad input even for a plain manifest', async () => {
    const err = await failure(
      resolveOras(`oras://${reg.host}/os/debian:13`, { ...QUICK, platform: 'linux' }),
    );
    expect(err.code).toBe('BTY_ERR_BAD_INPUT');
    expect(err.exitCode).toBe(2);
  });

  it('a Docker v2 manifest resolves to its (only) layer', async () => {
    const pushed = await pushDockerV2(reg, 'os/dockerish', 'v2', disk);
    const r = await resolveOras(`oras://${reg.host}/os/dockerish:v2`, QUICK);
    expect(r.digest).toBe(pushed.layers[0]!.digest);
    expect(r.title).toBeNull();
  });

  it('signature, SBOM and sidecar layers beside the image are passed over', async () => {
    await pushArtifact(reg, 'os/signed', 'latest', {
      layers: [
        { data: Buffer.alloc(200_000, 1), mediaType: 'application/spdx+json', title: 'sbom.json' },
        {
          data: Buffer.alloc(150_000, 2),
          mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json',
        },
        { data: Buffer.alloc(100_000, 3), mediaType: OCTET, title: 'disk.img.gz.sha256' },
        { data: disk, mediaType: OCTET, title: 'disk.img.gz' },
      ],
    });
    const r = await resolveOras(`oras://${reg.host}/os/signed:latest`, QUICK);
    expect(r.title).toBe('disk.img.gz');
    expect(r.size).toBe(disk.length);
  });

  it('the largest of several image-like layers wins', async () => {
    await pushArtifact(reg, 'os/two', 'latest', {
      layers: [
        { data: other, mediaType: OCTET, title: 'small.img' },
        { data: disk, mediaType: OCTET, title: 'large.img' },
      ],
    });
    expect((await resolveOras(`oras://${reg.host}/os/two:latest`, QUICK)).title).toBe('large.img');
  });

  it('an artifact with only a signature is refused as not a disk image', async () => {
    await pushArtifact(reg, 'os/sigonly', 'sig', {
      layers: [{ data: other, mediaType: 'application/vnd.dev.cosign.artifact.sig.v1+json' }],
    });
    const err = await failure(resolveOras(`oras://${reg.host}/os/sigonly:sig`, QUICK));
    expect(err.code).toBe('BTY_ERR_ORAS_ARTIFACT');
    expect(err.message).toMatch(/not a disk-image artifact/);
    expect(err.message).toContain('application/vnd.dev.cosign.artifact.sig.v1+json');
  });

  describe('a multi-platform index', () => {
    let amd: string;
    let arm: string;
    beforeAll(async () => {
      const a = await pushArtifact(reg, 'os/multi', null, {
        layers: [{ data: disk, mediaType: OCTET, title: 'amd64.img' }],
      });
      const b = await pushArtifact(reg, 'os/multi', null, {
        layers: [{ data: other, mediaType: OCTET, title: 'arm64.img' }],
      });
      amd = a.digest;
      arm = b.digest;
      const entry = (d: typeof a, architecture: string) => ({
        digest: d.digest,
        size: d.size,
        mediaType: MEDIA_TYPES.ociManifest,
        platform: { os: 'linux', architecture },
      });
      await pushIndex(reg, 'os/multi', 'oci', [entry(a, 'amd64'), entry(b, 'arm64')], 'oci');
    });

    it("is followed to this machine's platform", async () => {
      const r = await resolveOras(`oras://${reg.host}/os/multi:oci`, QUICK);
      const mine = machinePlatform();
      if (mine === 'linux/amd64' || mine === 'linux/arm64') {
        expect(r.platform).toBe(mine);
        expect(r.manifestDigest).toBe(mine === 'linux/amd64' ? amd : arm);
      }
    });

    it('or to the --platform asked for', async () => {
      const r = await resolveOras(`oras://${reg.host}/os/multi:oci`, {
        ...QUICK,
        platform: 'linux/arm64',
      });
      expect(r.platform).toBe('linux/arm64');
      expect(r.title).toBe('arm64.img');
      expect(r.manifestDigest).toBe(arm);
    });

    it('a platform the index lacks is refused, naming those it has', async () => {
      const err = await failure(
        resolveOras(`oras://${reg.host}/os/multi:oci`, { ...QUICK, platform: 'linux/riscv64' }),
      );
      expect(err.code).toBe('BTY_ERR_ORAS_ARTIFACT');
      expect(err.message).toContain('linux/amd64, linux/arm64');
    });
  });

  it('a digest naming a manifest resolves through it; one naming a blob is the blob', async () => {
    const pushed = await pushArtifact(reg, 'os/pinned', 'x', {
      layers: [{ data: disk, mediaType: OCTET, title: 'pinned.img' }],
    });
    const viaManifest = await resolveOras(`oras://${reg.host}/os/pinned@${pushed.digest}`, QUICK);
    expect(viaManifest.title).toBe('pinned.img');
    expect(viaManifest.digest).toBe(pushed.layers[0]!.digest);

    const blob = await pushBlob(reg, 'os/pinned', other);
    const direct = await resolveOras(`oras://${reg.host}/os/pinned@${blob.digest}`, QUICK);
    expect(direct.digest).toBe(blob.digest);
    expect(direct.size).toBe(other.length);
    expect(direct.manifestDigest).toBeNull();
    expect(direct.title).toBeNull();
  });

  it('an unknown tag, repository or digest is BTY_ERR_ORAS_NOT_FOUND (exit 2)', async () => {
    await pushArtifact(reg, 'os/known', 'yes', {
      layers: [{ data: disk, mediaType: OCTET, title: 'a.img' }],
    });
    const tag = await failure(resolveOras(`oras://${reg.host}/os/known:no`, QUICK));
    expect(tag.code).toBe('BTY_ERR_ORAS_NOT_FOUND');
    expect(tag.exitCode).toBe(2);
    expect(tag.message).toContain('tag no');
    const repo = await failure(resolveOras(`oras://${reg.host}/os/nothing-here:1`, QUICK));
    expect(repo.code).toBe('BTY_ERR_ORAS_NOT_FOUND');
    const digest = await failure(
      resolveOras(`oras://${reg.host}/os/known@sha256:${'0'.repeat(64)}`, QUICK),
    );
    expect(digest.code).toBe('BTY_ERR_ORAS_NOT_FOUND');
  });

  it.each([
    ['oras://', /empty oras:\/\/ reference/],
    [`oras://HOST/Upper/case:1`, /malformed oras:\/\/ reference/],
    ['oras://host/norepo:1', /<host>\/<owner>\/<repo>/],
    ['oras://host/o/r@sha256:abc', /malformed/],
  ])('a malformed reference %s is refused before any request (exit 2)', async (ref, message) => {
    const err = await failure(resolveOras(ref, QUICK));
    expect(err.code).toBe('BTY_ERR_SRC_INVALID');
    expect(err.exitCode).toBe(2);
    expect(err.message).toMatch(message);
  });
});

describe('resolveOras with token auth', () => {
  beforeAll(async () => {
    await pushArtifact(secured, 'public/disk', '1', {
      layers: [{ data: disk, mediaType: OCTET, title: 'disk.img' }],
    });
    await pushArtifact(secured, 'private/disk', '1', {
      layers: [{ data: disk, mediaType: OCTET, title: 'secret.img' }],
    });
  });

  it('an anonymous pull gets a token for repository:<repo>:pull from the realm', async () => {
    const before = secured.tokenRequests.length;
    const r = await resolveOras(`oras://${secured.host}/public/disk:1`, QUICK);
    expect(r.title).toBe('disk.img');
    const asked = secured.tokenRequests.slice(before);
    expect(asked.length).toBeGreaterThan(0);
    expect(asked[0]!.scope).toEqual(['repository:public/disk:pull']);
    expect(asked[0]!.user).toBeNull();
    expect(asked[0]!.service).toBe(secured.service);
    // The token fetches the blob too.
    const headers = await r.client.credentials();
    const res = await fetch(r.blobUrl, { headers });
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(disk)).toBe(true);
  });

  it('a refused scope is BTY_ERR_ORAS_AUTH, naming the repository', async () => {
    const err = await failure(
      resolveOras(`oras://${secured.host}/private/disk:1`, { ...QUICK, env: {} }),
    );
    expect(err.code).toBe('BTY_ERR_ORAS_AUTH');
    expect(err.message).toContain('private/disk');
    expect(err.hint).toMatch(/BTY_ORAS_USERNAME/);
  });

  it('with BTY_ORAS_USERNAME / BTY_ORAS_PASSWORD the token service grants it', async () => {
    const before = secured.tokenRequests.length;
    const r = await resolveOras(`oras://${secured.host}/private/disk:1`, {
      ...QUICK,
      env: { BTY_ORAS_USERNAME: 'alice', BTY_ORAS_PASSWORD: 'wonderland' },
    });
    expect(r.title).toBe('secret.img');
    expect(secured.tokenRequests.slice(before).map((t) => t.user)).toContain('alice');
  });

  it('... and so does a login in the Docker config.json auths', async () => {
    const config = join(dir, 'docker');
    await import('node:fs/promises').then((f) => f.mkdir(config, { recursive: true }));
    const auth = Buffer.from('alice:wonderland').toString('base64');
    await writeFile(
      join(config, 'config.json'),
      JSON.stringify({ auths: { [secured.host]: { auth } } }),
    );
    const r = await resolveOras(`oras://${secured.host}/private/disk:1`, {
      ...QUICK,
      env: { DOCKER_CONFIG: config },
    });
    expect(r.title).toBe('secret.img');
  });

  it('BTY_ORAS_REGISTRY keeps the env login from registries it does not list', async () => {
    const before = secured.tokenRequests.length;
    const err = await failure(
      resolveOras(`oras://${secured.host}/private/disk:1`, {
        ...QUICK,
        env: {
          BTY_ORAS_USERNAME: 'alice',
          BTY_ORAS_PASSWORD: 'wonderland',
          BTY_ORAS_REGISTRY: 'registry.example:5000',
        },
      }),
    );
    expect(err.code).toBe('BTY_ERR_ORAS_AUTH');
    expect(secured.tokenRequests.slice(before).every((t) => t.user === null)).toBe(true);
    const r = await resolveOras(`oras://${secured.host}/private/disk:1`, {
      ...QUICK,
      env: {
        BTY_ORAS_USERNAME: 'alice',
        BTY_ORAS_PASSWORD: 'wonderland',
        BTY_ORAS_REGISTRY: `registry.example:5000, ${secured.host}`,
      },
    });
    expect(r.title).toBe('secret.img');
  });

  it('a wrong password is BTY_ERR_ORAS_AUTH, naming where the login came from', async () => {
    const err = await failure(
      resolveOras(`oras://${secured.host}/private/disk:1`, {
        ...QUICK,
        env: { BTY_ORAS_USERNAME: 'alice', BTY_ORAS_PASSWORD: 'wrong' },
      }),
    );
    expect(err.code).toBe('BTY_ERR_ORAS_AUTH');
    expect(err.message).toContain('BTY_ORAS_USERNAME');
  });
});

describe('resolveOras with a registry that asks for Basic auth', () => {
  let basic: Registry;
  beforeAll(async () => {
    basic = await startRegistry({ auth: 'htpasswd', basicUsers: { bob: 'builder' } });
    await pushArtifact(basic, 'team/disk', '1', {
      layers: [{ data: disk, mediaType: OCTET, title: 'team.img' }],
    });
  }, 60_000);
  afterAll(async () => {
    await basic?.stop();
  });

  it('without a login: BTY_ERR_ORAS_AUTH saying a login is needed', async () => {
    const err = await failure(
      resolveOras(`oras://${basic.host}/team/disk:1`, { ...QUICK, env: {} }),
    );
    expect(err.code).toBe('BTY_ERR_ORAS_AUTH');
    expect(err.message).toMatch(/asks for a login \(Basic\)/);
  });

  it('with a login: the manifest and the blob are fetched with it', async () => {
    const r = await resolveOras(`oras://${basic.host}/team/disk:1`, {
      ...QUICK,
      env: { BTY_ORAS_USERNAME: 'bob', BTY_ORAS_PASSWORD: 'builder' },
    });
    expect(r.title).toBe('team.img');
    const res = await fetch(r.blobUrl, { headers: await r.client.credentials() });
    expect(Buffer.from(await res.arrayBuffer()).equals(disk)).toBe(true);
  });
});

it('a Docker manifest list is followed like an OCI index', async () => {
  const a = await pushDockerV2(reg, 'os/dlist', null, disk);
  const b = await pushDockerV2(reg, 'os/dlist', null, other);
  const entry = (d: typeof a, architecture: string) => ({
    digest: d.digest,
    size: d.size,
    mediaType: MEDIA_TYPES.dockerManifest,
    platform: { os: 'linux', architecture },
  });
  await pushIndex(reg, 'os/dlist', 'list', [entry(a, 'amd64'), entry(b, 'arm64')], 'docker');
  const r = await resolveOras(`oras://${reg.host}/os/dlist:list`, {
    ...QUICK,
    platform: 'linux/arm64',
  });
  expect(r.platform).toBe('linux/arm64');
  expect(r.digest).toBe(b.layers[0]!.digest);
});
