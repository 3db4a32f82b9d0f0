/** (Being written.) */
import type { FastifyInstance } from 'fastify';
import type { WebContext } from '../context.ts';

export function registerMachineRoutes(_app: FastifyInstance, _ctx: WebContext): void {}
