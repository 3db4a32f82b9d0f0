/**
 * The two paths the TFTP benchmark measures over: loopback, and a LAN-like lossless link made of
 * two network namespaces joined by a veth pair, with a small fixed `tc netem` delay on both ends
 * (round trips are what `windowsize` saves). Every namespace this module creates is deleted by
 * `remove()`, which is idempotent; deleting a namespace deletes its end of the veth pair too.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** RFC 2544's benchmarking range: never routed, and only ever inside our own namespaces here. */
const SERVER_ADDRESS = '198.18.0.1';
const CLIENT_ADDRESS = '198.18.0.2';

export type LinkId = 'loopback' | 'veth';

export interface Link {
  id: LinkId;
  /** How the report names it. */
  title: string;
  /** Where the servers listen and the client sends its requests. */
  serverAddress: string;
  /** The netem delay on each end actually in place (0 on loopback, or when netem is missing). */
  delayMs: number;
  /** Prefix for a command run on the server's side: `[]` on loopback, else `nsenter --net=…`. */
  serverPrefix: string[];
  clientPrefix: string[];
  remove(): Promise<void>;
}

export function loopback(): Link {
  return {
    id: 'loopback',
    title: 'loopback',
    serverAddress: '127.0.0.1',
    delayMs: 0,
    serverPrefix: [],
    clientPrefix: [],
    remove: () => Promise.resolve(),
  };
}

async function ip(args: string[]): Promise<void> {
  try {
    await run('ip', args);
  } catch (err) {
    const e = err as { stderr?: string };
    throw new Error(`ip ${args.join(' ')}: ${(e.stderr ?? String(err)).trim()}`, { cause: err });
  }
}

/** Whether `tc netem` exists in this kernel (CONFIG_NET_SCH_NETEM; some VM kernels lack it). */
async function addDelay(ns: string, dev: string, delayMs: number): Promise<boolean> {
  try {
    await run('tc', [
      ...['-n', ns, 'qdisc', 'add', 'dev', dev, 'root'],
      ...['netem', 'delay', `${delayMs}ms`, 'limit', '10000'],
    ]);
    return true;
  } catch (err) {
    const e = err as { stderr?: string };
    if (/qdisc kind is unknown/i.test(e.stderr ?? '')) return false;
    throw new Error(`tc netem on ${dev}: ${(e.stderr ?? String(err)).trim()}`, { cause: err });
  }
}

/**
 * Two namespaces named after this process (parallel runs do not clash), a veth pair between them
 * (MTU 1500, as Ethernet) and `delayMs` of netem delay on each end: a round trip of twice that.
 * Without netem in the kernel the link has no added delay, and says so (`delayMs` 0, `title`).
 */
export async function vethLink(delayMs: number): Promise<Link> {
  const tag = `bty-tftp-bench-${process.pid}`;
  const serverNs = `${tag}-srv`;
  const clientNs = `${tag}-cli`;
  // Interface names are limited to 15 characters.
  const serverDev = `tb${process.pid}s`;
  const clientDev = `tb${process.pid}c`;
  let removed = false;
  let netem = delayMs > 0;
  const remove = async () => {
    if (removed) return;
    removed = true;
    for (const ns of [clientNs, serverNs]) {
      await run('ip', ['netns', 'del', ns]).catch(() => undefined);
    }
  };
  try {
    await ip(['netns', 'add', serverNs]);
    await ip(['netns', 'add', clientNs]);
    await ip([
      ...['link', 'add', serverDev, 'netns', serverNs, 'type', 'veth'],
      ...['peer', 'name', clientDev, 'netns', clientNs],
    ]);
    const sides = [
      [serverNs, serverDev, SERVER_ADDRESS],
      [clientNs, clientDev, CLIENT_ADDRESS],
    ] as const;
    for (const [ns, dev, address] of sides) {
      await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
      await ip(['-n', ns, 'addr', 'add', `${address}/24`, 'dev', dev]);
      await ip(['-n', ns, 'link', 'set', dev, 'mtu', '1500', 'up']);
      if (netem) netem = await addDelay(ns, dev, delayMs);
    }
  } catch (err) {
    await remove();
    throw err;
  }
  if (!netem && delayMs > 0) {
    // The server's end may have got its delay before the client's end found netem missing.
    await run('tc', ['-n', serverNs, 'qdisc', 'del', 'dev', serverDev, 'root']).catch(() => 0);
  }
  const enter = (ns: string) => ['nsenter', `--net=/run/netns/${ns}`];
  const why = delayMs > 0 ? ' (this kernel has no tc netem)' : '';
  return {
    id: 'veth',
    title: netem
      ? `veth between two namespaces, netem delay ${delayMs} ms each way`
      : `veth between two namespaces, no added delay${why}`,
    serverAddress: SERVER_ADDRESS,
    delayMs: netem ? delayMs : 0,
    serverPrefix: enter(serverNs),
    clientPrefix: enter(clientNs),
    remove,
  };
}
