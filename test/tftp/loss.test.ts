/**
 * bin/bty-tftp in a network namespace behind a veth pair that drops 5 % of the packets in each
 * direction (`tc netem loss 5%` on both ends, or the same drops made by nftables on kernels without
 * netem): every real client, with and without options,
 * alone and several in parallel, still gets every byte.
 */
import { type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  addPacketLoss,
  createNetns,
  createVethPair,
  deleteNetns,
  spawnInNetns,
  uniqueName,
} from '../helpers/netns.ts';
import { CLIENTS, makeTftpRoot, runClient, sha256File, type TftpRoot } from './fixtures.ts';

const BIN = new URL('../../bin/bty-tftp', import.meta.url).pathname;
const SERVER_IP = '10.99.0.1';
const CLIENT_IP = '10.99.0.2';
const PORT = 69;

let root: TftpRoot;
let serverNs: string;
let clientNs: string;
let server: ChildProcess | undefined;
let serverLog = '';

beforeAll(async () => {
  root = await makeTftpRoot();
  serverNs = await createNetns(uniqueName('btyts'));
  clientNs = await createNetns(uniqueName('btytc'));
  const serverDev = uniqueName('tfs');
  const clientDev = uniqueName('tfc');
  await createVethPair({
    a: { name: serverDev, netns: serverNs, address: `${SERVER_IP}/24` },
    b: { name: clientDev, netns: clientNs, address: `${CLIENT_IP}/24` },
  });
  // `tc netem loss 5%` on both ends (nftables random drops where the kernel has no netem).
  await addPacketLoss(serverDev, 5, serverNs);
  await addPacketLoss(clientDev, 5, clientNs);
  // Run as root inside the namespace: the default port 69 applies.
  server = spawnInNetns(serverNs, BIN, ['--root', root.dir, '--address', SERVER_IP]);
  server.stderr!.setEncoding('utf8').on('data', (d: string) => (serverLog += d));
  for (let i = 0; i < 300 && !/listening on/.test(serverLog); i++) {
    if (server.exitCode !== null) throw new Error(`bty-tftp exited: ${serverLog}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  expect(serverLog).toContain(`listening on ${SERVER_IP}:${PORT}`);
});

afterAll(async () => {
  if (server?.pid !== undefined && server.exitCode === null) {
    const exited = new Promise((resolve) => server!.once('exit', resolve));
    process.kill(server.pid, 'SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    if (server.exitCode === null) process.kill(server.pid, 'SIGKILL');
  }
  if (serverNs) await deleteNetns(serverNs);
  if (clientNs) await deleteNetns(clientNs);
  await root?.remove();
});

const inClientNs = () => ['ip', 'netns', 'exec', clientNs];

/** Fetches `file` with `client` from inside the client namespace; resolves with the sha256. */
async function fetchThroughLossyLink(client: (typeof CLIENTS)[number], file: string, tag: string) {
  const dest = join(root.out, `loss-${tag}-${client.name.replace(/\W+/g, '_')}-${file}`);
  for (let attempt = 1; ; attempt++) {
    try {
      await runClient(client.argv(SERVER_IP, PORT, file, dest), 180_000, inClientNs());
      return sha256File(dest);
    } catch (err) {
      // atftp 0.8 aborts ("unexpected OACK") when its ACK 0 was lost and the OACK comes again,
      // whatever the server; RFC 2347 servers must repeat the OACK. Only that failure is retried.
      const text = String((err as { stderr?: string }).stderr ?? '');
      if (!client.name.startsWith('atftp') || !/unexpected OACK/.test(text) || attempt === 3) {
        throw err;
      }
    }
  }
}

// Lock-step clients recover each loss by a timeout, so a 1 MB file takes them tens of seconds.
for (const client of CLIENTS) {
  it(
    `${client.name} gets ipxe.efi intact through 5 % loss each way`,
    { timeout: 200_000 },
    async () => {
      const expected = await sha256File(join(root.dir, 'ipxe.efi'));
      expect(await fetchThroughLossyLink(client, 'ipxe.efi', 'solo')).toBe(expected);
    },
  );
}

it(
  'every client at once, plus windowed 3 MB transfers, through 5 % loss',
  { timeout: 200_000 },
  async () => {
    const files = ['undionly.kpxe', 'rand.bin'] as const;
    const expected = Object.fromEntries(
      await Promise.all(files.map(async (f) => [f, await sha256File(join(root.dir, f))] as const)),
    );
    const windowed = CLIENTS.filter((c) => /windowsize|8192/.test(c.name));
    const runs = [
      ...CLIENTS.map((client) => ({ client, file: 'undionly.kpxe' })),
      ...windowed.map((client) => ({ client, file: 'rand.bin' })),
    ].map(async ({ client, file }) => ({
      file,
      sha: await fetchThroughLossyLink(client, file, 'parallel'),
    }));
    for (const { file, sha } of await Promise.all(runs)) expect(sha).toBe(expected[file]);
    expect(serverLog).toMatch(/ok in \d+ ms/);
  },
);
