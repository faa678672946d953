/**
 * The production ModelOpener. The engine's generate API is being built on another branch; until it lands
 * here, opening a model for serving fails clearly instead of pretending (tests bring their own fake).
 */
import { accessSync, constants } from 'node:fs';
import { EdgeError } from '../errors.js';
import type { LocalModel } from './engine-port.js';

export async function openLocalModel(path: string): Promise<LocalModel> {
  try {
    accessSync(path, constants.R_OK);
  } catch {
    throw new EdgeError('E_MODEL_NOT_FOUND', `model file ${path} does not exist or cannot be read`);
  }
  throw new EdgeError(
    'E_NOT_IMPLEMENTED',
    `this build cannot generate text yet (the engine's generate API has not landed), so \`edgellm serve\` cannot serve ${path}`,
  );
}
