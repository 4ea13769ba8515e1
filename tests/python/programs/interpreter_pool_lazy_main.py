"""A main script that imports a module subinterpreters cannot load (faulthandler) runs its
InterpreterPoolExecutor tasks all the same: a worker loads the script only when a task needs
something of it, and these tasks do not. Printed the same under python 3.14+ and under
unirun-python (tests/python/test_compat.py)."""
import concurrent.futures as cf
import faulthandler
import math

faulthandler.enable()

if __name__ == "__main__":
    with cf.InterpreterPoolExecutor(2) as ex:
        print(list(ex.map(math.factorial, range(8))))
        print(ex.submit(lambda: [i * i for i in range(5)]).result())
    print("end")
