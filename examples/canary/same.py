"""Prints the same under every configuration: the canary says `same`."""
import concurrent.futures as cf


def collatz(n):
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


if __name__ == "__main__":
    with cf.ThreadPoolExecutor(4) as executor:
        steps = list(executor.map(collatz, range(1, 2000)))
    print("longest chain below 2000:", max(steps), "at", steps.index(max(steps)) + 1)
